# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain --slicer``: the 3D Slicer scene and colour table of a case folder, parsed as Slicer reads
them: an MRML document whose nodes refer to nodes it defines (or Slicer's built-in colour tables), whose storage
nodes load files that exist (the input image, every NIfTI map, the segmentation), and a colour table covering every
label of the segmentation."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_segcam.cli import main
from monai_segcam.visualize.colors import class_colors

NET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0}
AFFINE = np.array([[0.0, -0.8, 0.0, 10.0], [1.2, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]])
BUILT_IN_COLORS = {"vtkMRMLColorTableNodeGrey", "vtkMRMLColorTableNodeRainbow"}


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    from monai.networks.nets import UNet

    root = tmp_path_factory.mktemp("slicer")
    image = np.random.default_rng(0).normal(0, 0.2, (16, 12, 8)).astype(np.float32)
    image[4:10, 3:9, 2:6] += 2.0
    nib.save(nib.Nifti1Image(image, AFFINE), root / "ct 1.nii.gz")
    torch.manual_seed(1)
    torch.save(UNet(**NET).state_dict(), root / "unet.pt")
    args = ["explain", root / "ct 1.nii.gz", "--network", "monai.networks.nets.UNet", "--network-args", json.dumps(NET),
            "--checkpoint", root / "unet.pt", "--device", "cpu", "--classes", "1", "2", "--layers", "pre_head",
            "--method", "hirescam", "gradcam", "--no-png", "--quiet", "--slicer", "--output", root / "out"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    return root / "out" / "ct_1"


def test_scene_loads_the_image_maps_and_segmentation(case_folder):
    scene = ET.parse(case_folder / "ct_1_scene.mrml").getroot()
    assert scene.tag == "MRML"
    ids = {node.get("id") for node in scene}
    assert len(ids) == len(scene)  # unique ids
    by_id = {node.get("id"): node for node in scene}
    for node in scene:  # every reference points to a node of the scene, or a colour table Slicer always has
        refs = [node.get(k) for k in ("displayNodeRef", "storageNodeRef", "colorNodeID", "backgroundVolumeID",
                                      "foregroundVolumeID", "labelVolumeID", "activeVolumeID", "activeLabelVolumeID")]
        refs += [r.split(":", 1)[1] for r in (node.get("references") or "").split(";") if r]
        assert {r for r in refs if r} <= ids | BUILT_IN_COLORS, node.tag
    loaded = {}
    for volume in scene.iter():
        if volume.tag in ("Volume", "LabelMapVolume"):
            storage = by_id[volume.get("storageNodeRef")]
            path = os.path.normpath(os.path.join(case_folder, storage.get("fileName")))
            assert os.path.isfile(path)
            loaded[volume.get("name")] = (volume.tag, path, by_id[volume.get("displayNodeRef")])
    summary = json.loads((case_folder / "ct_1_segcam.json").read_text())
    maps = [entry["file"] for entry in summary["files"] if entry["kind"] == "cam"]
    assert len(maps) == 4
    assert {os.path.basename(p) for n, (tag, p, _) in loaded.items() if tag == "Volume" and n != "image"} == set(maps)
    assert loaded["image"][1] == os.path.normpath(case_folder.parents[1] / "ct 1.nii.gz")
    assert loaded["segmentation"][:2] == ("LabelMapVolume", str(case_folder / "ct_1_seg.nii.gz"))
    for name, (_tag, path, display) in loaded.items():
        if name not in ("image", "segmentation"):  # a map: windowed from 0 to its maximum
            maximum = float(nib.load(path).get_fdata().max())
            level, window = float(display.get("level")), float(display.get("window"))
            assert (level - window / 2, level + window / 2) == pytest.approx((0.0, maximum), rel=1e-6, abs=1e-6)
    composite = [node for node in scene if node.tag == "SliceComposite"]
    assert {node.get("layoutName") for node in composite} == {"Red", "Yellow", "Green"}
    first_map = [v for v in scene if v.tag == "Volume"][1].get("id")
    assert all(node.get("foregroundVolumeID") == first_map for node in composite)
    assert all(by_id[node.get("backgroundVolumeID")].get("name") == "image" for node in composite)


def test_color_table_covers_the_segmentation(case_folder):
    scene = ET.parse(case_folder / "ct_1_scene.mrml").getroot()
    (storage,) = [node for node in scene if node.tag == "ColorTableStorage"]
    label_display = next(node for node in scene if node.tag == "LabelMapVolumeDisplay")
    assert label_display.get("colorNodeID") == next(n for n in scene if n.tag == "ColorTable").get("id")
    rows = {}
    for line in (case_folder / storage.get("fileName")).read_text().splitlines():
        if line.startswith("#"):
            continue
        index, name, *rgba = line.split()
        assert len(rgba) == 4 and all(0 <= int(v) <= 255 for v in rgba), line
        rows[int(index)] = (name, tuple(int(v) for v in rgba))
    labels = set(np.unique(np.asanyarray(nib.load(case_folder / "ct_1_seg.nii.gz").dataobj)).tolist())
    assert labels <= set(rows) and 0 in rows
    assert rows[0] == ("background", (0, 0, 0, 0))
    assert {c: rgba for c, (_, rgba) in rows.items()} == class_colors(sorted(rows))
    assert len({rgba for c, (_, rgba) in rows.items() if c}) == len(rows) - 1  # distinct class colours
