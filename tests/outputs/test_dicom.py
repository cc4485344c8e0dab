# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""DICOM in, DICOM out: ``monai-segcam explain SERIES --format nifti dicom`` on a DICOM series this test writes with
pydicom (oblique planes, files named against their order). The Parametric Maps and the SEG are read back with
pydicom / highdicom and every pixel is placed in the world by the DICOM geometry it carries (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing): it holds the value of the NIfTI output at that world position."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_segcam.cli import main
from monai_segcam.outputs import dicom_geometry

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

NET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0}
FRAMES, ROWS, COLUMNS = 8, 10, 12
ANGLE = math.radians(20.0)
ORIENTATION = [math.cos(ANGLE), math.sin(ANGLE), 0.0, 0.0, 0.0, -1.0]  # oblique rows, columns going down (LPS)
PIXEL_SPACING, THICKNESS, ORIGIN = [0.8, 0.7], 2.5, np.array([10.0, -20.0, 30.0])
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_series(folder, pixels: np.ndarray) -> list:
    """One CT slice per file, ``pixels`` (frames, rows, columns); the files are named in reverse slice order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    datasets = []
    for k, plane in enumerate(pixels):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.SOPClassUID = CTImageStorage, CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Segcam", "segcam-7", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 3, k + 1, "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = ORIENTATION
        ds.ImagePositionPatient = [float(v) for v in ORIGIN + k * THICKNESS * normal]
        ds.PixelSpacing, ds.SliceThickness = PIXEL_SPACING, THICKNESS
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = plane.astype(np.int16).tobytes()
        ds.save_as(folder / f"img{len(pixels) - k:03d}.dcm", enforce_file_format=True)
        datasets.append(ds)
    return datasets


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """The series, a tiny UNet checkpoint, and the output of ``explain --format nifti dicom``."""
    from monai.networks.nets import UNet

    root = tmp_path_factory.mktemp("dicom")
    pixels = np.random.default_rng(0).normal(0, 20, (FRAMES, ROWS, COLUMNS))
    pixels[2:6, 3:8, 4:10] += 150.0
    series = write_series(root / "ct series", pixels)
    torch.manual_seed(0)
    torch.save(UNet(**NET).state_dict(), root / "unet.pt")
    net = ["--network", "monai.networks.nets.UNet", "--network-args", json.dumps(NET), "--checkpoint", root / "unet.pt"]
    args = ["explain", root / "ct series", *net, "--device", "cpu", "--intensity-range", "-50", "200", "--classes", "1",
            "2", "--layers", "pre_head", "--method", "hirescam", "gradcam", "--no-png", "--quiet", "--format", "nifti",
            "dicom", "--output", root / "out"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    return root / "out" / "ct_series", series


def world_of_pixels(frame_position, orientation, spacing, rows, columns) -> np.ndarray:
    """The LPS position of every pixel (row r, column c) of a frame, by the DICOM definition, ``(rows, columns, 3)``."""
    along_row, along_column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    return (np.asarray(frame_position, float) + c[..., None] * spacing[1] * along_row
            + r[..., None] * spacing[0] * along_column)  # fmt: skip


def nifti_values(nifti, world_lps: np.ndarray) -> np.ndarray:
    """The NIfTI's voxels at LPS world positions (which must be voxel centres)."""
    to_voxel = np.linalg.inv(LPS @ nifti.affine)
    index = np.concatenate([world_lps, np.ones((*world_lps.shape[:-1], 1))], -1) @ to_voxel.T
    rounded = np.rint(index[..., :3])
    assert np.abs(index[..., :3] - rounded).max() < 1e-4  # on the NIfTI's grid
    i, j, k = (rounded[..., d].astype(int) for d in range(3))
    return np.asanyarray(nifti.dataobj)[i, j, k]


def test_parametric_maps_round_trip(explained):
    folder, series = explained
    summary = json.loads((folder / "ct_series_segcam.json").read_text())
    maps = [entry for entry in summary["files"] if entry["kind"] == "dicom_map"]
    assert len(maps) == 4  # two methods x two classes
    positions = {tuple(np.round(np.asarray(d.ImagePositionPatient, float), 4)) for d in series}
    for entry in maps:
        pm = pydicom.dcmread(folder / entry["file"])
        nifti = nib.load(folder / entry["file"].replace(".dcm", ".nii.gz"))
        assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
        for tag in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
            assert pm[tag].value == series[0][tag].value
        assert pm.SeriesInstanceUID != series[0].SeriesInstanceUID
        shared = pm.SharedFunctionalGroupsSequence[0]
        orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
        measures = shared.PixelMeasuresSequence[0]
        assert orientation == pytest.approx(ORIENTATION, abs=1e-6)
        assert [float(v) for v in measures.PixelSpacing] == pytest.approx(PIXEL_SPACING)
        assert float(measures.SpacingBetweenSlices) == pytest.approx(THICKNESS)
        mapping = shared.RealWorldValueMappingSequence[0]
        assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
        frames = pm.pixel_array.astype(np.float64) * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept
        assert frames.shape == (FRAMES, ROWS, COLUMNS)
        written = set()
        for f, group in enumerate(pm.PerFrameFunctionalGroupsSequence):
            position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
            written.add(tuple(np.round(position, 4)))
            world = world_of_pixels(position, orientation, measures.PixelSpacing, ROWS, COLUMNS)
            np.testing.assert_array_equal(frames[f], nifti_values(nifti, world))
        assert written == positions  # the maps' frames lie on the source slices
        assert np.abs(nifti.get_fdata()).max() > 0  # the map is not trivially zero
        assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(float(nifti.get_fdata().max()))


def test_segmentation_round_trip(explained):
    folder, series = explained
    seg = hd.seg.segread(folder / "ct_series_seg.dcm")
    assert seg.StudyInstanceUID == series[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert seg.number_of_segments == 2
    volume = seg.get_volume(combine_segments=True)
    nifti = nib.load(folder / "ct_series_seg.nii.gz")
    index = np.stack(np.meshgrid(*[np.arange(s) for s in volume.array.shape], indexing="ij"), -1).astype(float)
    world = (np.concatenate([index, np.ones((*index.shape[:-1], 1))], -1) @ volume.affine.T)[..., :3]  # LPS
    expected = nifti_values(nifti, world)
    np.testing.assert_array_equal(volume.array, expected)
    assert 0 < (expected > 0).sum() < expected.size  # a segmentation with structure


def test_dicom_format_needs_a_dicom_series(tmp_path, explained, capsys):
    nifti = next(explained[0].glob("*_seg.nii.gz"))
    args = ["explain", str(nifti), "--network", "monai.networks.nets.UNet", "--network-args", json.dumps(NET),
            "--checkpoint", str(explained[0].parents[1] / "unet.pt"), "--device", "cpu", "--format", "dicom",
            "--output", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 1
    assert "DICOM output needs a DICOM series input" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dicom_geometry_of_an_affine():
    affine = np.array([[0.0, 0.0, 2.5, -10.0], [-0.7, 0.0, 0.0, 20.0], [0.0, -0.8, 0.0, 30.0], [0, 0, 0, 1.0]])
    geometry = dicom_geometry(affine, 3)
    assert geometry["orientation"] == [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    assert geometry["pixel_spacing"] == [0.8, 0.7] and geometry["slice_spacing"] == 2.5
    assert geometry["positions"][2] == [5.0, -20.0, 30.0]
    with pytest.raises(ValueError, match="not perpendicular"):
        dicom_geometry(np.array([[1.0, 1.0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]), 1)


def test_handler_saves_parametric_maps(explained, tmp_path):
    """SegCAMHandler(save_dicom=True) in a real evaluator over the series: the same maps as its NIfTI files."""
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.networks.nets import UNet
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

    from monai_segcam.handlers import SegCAMHandler

    folder, series = explained
    source = str(folder.parents[1] / "ct series")
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ScaleIntensityd("image")])
    net = UNet(**NET)
    net.load_state_dict(torch.load(folder.parents[1] / "unet.pt", weights_only=True))
    handler = SegCAMHandler(classes=[1], layers="pre_head", output_dir=tmp_path, save_dicom=True, csv_name=None)
    loader = DataLoader(Dataset([{"image": source}], pre), batch_size=1)
    SupervisedEvaluator(torch.device("cpu"), loader, net.eval(), val_handlers=[handler]).run()
    (path,) = tmp_path.glob("*.dcm")
    assert path.name.startswith("ct_series_cam_")
    pm, nifti = pydicom.dcmread(path), nib.load(str(path).replace(".dcm", ".nii.gz"))
    assert pm.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    shared = pm.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    for frame, group in zip(pm.pixel_array, pm.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        world = world_of_pixels(position, orientation, shared.PixelMeasuresSequence[0].PixelSpacing, ROWS, COLUMNS)
        np.testing.assert_array_equal(frame, nifti_values(nifti, world))


@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_write_dicom_series_reads_back(tmp_path, scale):
    """A volume written as a series is read back by MONAI (ITK) with its values and affine."""
    from monai.data import MetaTensor

    from monai_segcam.files import read_image
    from monai_segcam.outputs import write_dicom_series

    affine = np.array([[0.0, 0.0, 2.5, -10.0], [-0.7, 0.0, 0.0, 20.0], [0.0, -0.8, 0.0, 30.0], [0, 0, 0, 1.0]])
    volume = np.round(np.random.default_rng(3).normal(0, 300, (12, 10, 6))) * scale
    paths = write_dicom_series(MetaTensor(torch.as_tensor(volume)[None], affine=torch.as_tensor(affine)), tmp_path / "s")
    assert len(paths) == 6
    back = read_image(tmp_path / "s")
    np.testing.assert_allclose(back.affine.numpy(), affine, atol=1e-6)
    np.testing.assert_allclose(back[0].numpy(), volume, atol=0 if scale == 1.0 else np.ptp(volume) / 65535)


def test_multi_label_masks_as_overlapping_segments(explained, tmp_path):
    """Per class masks (multi-label) give one segment per channel, overlaps kept, on the series' geometry."""
    from monai_segcam.files import read_image
    from monai_segcam.outputs import CAMWriter

    folder, series = explained
    source = folder.parents[1] / "ct series"
    image = read_image(source)
    masks = np.zeros((2, *image.shape[1:]), bool)
    masks[0, 2:9, 1:6, 1:5], masks[1, 5:11, 3:9, 3:7] = True, True  # overlapping
    path = CAMWriter(tmp_path, dicom=True).write_dicom_segmentation("c", masks, image.affine, source, {1: "tumour"})
    seg = hd.seg.segread(path)
    assert seg.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["class 0", "tumour"]
    volume = seg.get_volume(combine_segments=False)
    index = np.stack(np.meshgrid(*[np.arange(s) for s in volume.array.shape[:3]], indexing="ij"), -1).astype(float)
    world = (np.concatenate([index, np.ones((*index.shape[:-1], 1))], -1) @ volume.affine.T)[..., :3]
    nifti = nib.Nifti1Image(np.moveaxis(masks, 0, -1).astype(np.uint8), image.affine.numpy())
    np.testing.assert_array_equal(volume.array, nifti_values(nifti, world))
