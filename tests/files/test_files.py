# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai_segcam.files``: reading image files, placing file voxels on the network grid, and the MONAI file pipeline
against the engine called on the image itself."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from monai.transforms import ScaleIntensityRange

from monai_segcam import SegCAM
from monai_segcam.cam import Box, Voxel
from monai_segcam.files import FileSegCAM, file_affine, place_region, read_image, voxels_to_grid
from monai_segcam.outputs import CAMWriter, write_case_folder
from monai_segcam.utils.loading import LoadedModel

AFFINE = np.array([[0.0, -1.2, 0.0, 30.0], [0.9, 0.0, 0.0, -10.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (20, 16, 12)


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    data[4:12, 3:10, 2:8] += 3.0
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def test_read_image_and_its_errors(image_file, tmp_path):
    image = read_image(image_file)
    assert tuple(image.shape) == (1, *SHAPE)
    np.testing.assert_allclose(file_affine(image_file), AFFINE, atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"label not found: .*absent\.nii\.gz"):
        read_image(tmp_path / "absent.nii.gz", "label")
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*corrupt\.nii\.gz"):
        read_image(tmp_path / "corrupt.nii.gz")


def test_voxels_to_grid_goes_through_the_world_position():
    target = np.diag([2.0, 2.0, 2.0, 1.0])
    target[:3, 3] = [-4.0, 0.0, 6.0]
    points = np.array([[0.0, 0.0, 0.0], [3.0, 5.0, 1.0]])
    world = (np.c_[points, np.ones(2)] @ AFFINE.T)[:, :3]
    mapped = voxels_to_grid(points, AFFINE, target)
    np.testing.assert_allclose((np.c_[mapped, np.ones(2)] @ target.T)[:, :3], world, atol=1e-9)


def test_place_region_maps_voxels_and_box_corners():
    halve = lambda points: points / 2  # noqa: E731
    region, summary = place_region("voxel:5,7,9", (64, 64, 40), (32, 32, 20), halve)
    assert region == Voxel((2, 4, 4)) and summary == {"kind": "voxel", "input_voxel": [5, 7, 9], "voxel": [2, 4, 4]}
    region, summary = place_region("box:2,2,2:9,13,39", (64, 64, 40), (32, 32, 20), halve)
    assert region == Box((1, 1, 1), (5, 7, 20)) and summary["end"] == [5, 7, 20]
    assert place_region("fp", (8, 8, 8), (8, 8, 8), halve) == ("fp", {"kind": "fp"})
    with pytest.raises(ValueError, match=r"region voxel: voxel \(5, 7, 40\) lies outside the image"):
        place_region("voxel:5,7,40", (64, 64, 40), (32, 32, 20), halve)


def test_file_pipeline_equals_the_engine_on_the_image(image_file, tmp_path):
    """Without preprocessing the network grid is the file's: the maps, the region of a file voxel and the
    segmentation equal those of the engine called on the image read by hand."""
    net = UNet(3, 1, 3, channels=(4, 8), strides=(2,)).eval()
    engine = SegCAM(net, layers="model.1.submodule", method="gradcam")
    scale = ScaleIntensityRange(-1.0, 3.0, 0.0, 1.0, clip=True)
    explainer = FileSegCAM(LoadedModel(net, 1), {"gradcam": engine}, intensity=scale)
    case = explainer(str(image_file), region="voxel:6,5,4")
    x = scale(read_image(image_file).float())[None]
    expected = engine(x, classes=[1, 2], region=Voxel((6, 5, 4)))
    assert case.name == "scan" and case.classes == [1, 2]  # the default: every class but the background
    np.testing.assert_allclose(case.maps[("model.1.submodule", "gradcam")], expected["model.1.submodule"].as_tensor()[0], atol=1e-6)
    with torch.no_grad():
        np.testing.assert_array_equal(case.segmentation, net(x)[0].argmax(0).numpy())
    assert case.summary["region_on_network_grid"]["voxel"] == [6, 5, 4]
    given = explainer(str(image_file), region=Voxel((6, 5, 4)))  # a region object: on the network grid as it is
    np.testing.assert_array_equal(given.maps[("model.1.submodule", "gradcam")], case.maps[("model.1.submodule", "gradcam")])
    assert given.summary["region_on_network_grid"] == {"kind": "Voxel"}
    writer = CAMWriter(tmp_path / "out")
    summary = write_case_folder(writer, case, class_names={1: "organ"})
    written = json.loads((tmp_path / "out" / "scan_segcam.json").read_text())
    assert written == summary and written["classes"] == {"1": "organ", "2": None}
    assert nib.load(tmp_path / "out" / "scan_cam_gradcam_model.1.submodule_class2.nii.gz").shape == SHAPE


def test_file_pipeline_errors(image_file):
    net = UNet(3, 2, 2, channels=(4, 8), strides=(2,)).eval()
    with pytest.raises(ValueError, match="needs an engine that predicts"):
        FileSegCAM(LoadedModel(net, 2), {})
    explainer = FileSegCAM(LoadedModel(net, 2), {"hirescam": SegCAM(net, layers="model.1.submodule")})
    with pytest.raises(ValueError, match=r"gives 1 channel\(s\) but the network expects 2"):
        explainer(str(image_file))
