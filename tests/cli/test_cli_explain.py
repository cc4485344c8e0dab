# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain`` / ``layers`` end to end, as subprocesses on files of every supported format: outputs on
the input's own grid (shape and affine read back with nibabel, references from nibabel and ITK), PNGs, JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import NETWORK_ARGS, NIFTI_AFFINE, SHAPE, itk_ras_affine, run_cli

BUNDLE_DEMO = Path(__file__).resolve().parents[2] / "bundles" / "segcam_demo"


def _reference_grid(kind: str, path: Path) -> np.ndarray:
    """The input's voxel -> RAS affine, read independently of MONAI."""
    import itk

    if kind == "nifti":
        return NIFTI_AFFINE
    if kind == "dicom":
        names = itk.GDCMSeriesFileNames.New(Directory=str(path)).GetInputFileNames()
        return itk_ras_affine(itk.imread(names))
    return itk_ras_affine(itk.imread(str(path)))


def _no_leftovers(output: Path) -> None:
    assert not list(output.rglob(".*"))  # no temporary file or folder


@pytest.fixture(scope="module")
def explained(cli_runs):
    """The run over all four formats, the bundle run (label region, no PNGs, quiet) and the ``layers`` command."""
    results = {name: cli_runs[name][0] for name in ("formats", "bundle", "layers")}
    return results, cli_runs["formats"][1], cli_runs["bundle"][1]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


CASES = {"nifti": "case_01_T1", "nrrd": "scan", "mha": "scan_b", "dicom": "dicom_series"}


@pytest.mark.parametrize("kind", list(CASES))
def test_outputs_on_input_grid(explained, cli_data, kind):
    import nibabel as nib

    results, output, _ = explained
    assert results["formats"].returncode == 0, results["formats"].stderr
    case = output / CASES[kind]
    reference = _reference_grid(kind, cli_data[kind])
    cams = sorted(case.glob("*_cam_*.nii.gz"))
    expected = [f"{CASES[kind]}_cam_hirescam_{layer}_class1.nii.gz" for layer in ("bottleneck", "pre_head")]
    assert [p.name for p in cams] == expected
    for path in [*cams, case / f"{CASES[kind]}_seg.nii.gz"]:
        image = nib.load(str(path))
        assert image.shape == SHAPE
        np.testing.assert_allclose(image.affine, reference, atol=1e-4)
    assert np.asarray(nib.load(str(cams[1])).dataobj).max() > 0
    seg = np.asarray(nib.load(str(case / f"{CASES[kind]}_seg.nii.gz")).dataobj)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2}


def test_pngs_and_summary(explained, cli_data):
    from matplotlib.image import imread

    results, output, _ = explained
    assert results["formats"].returncode == 0, results["formats"].stderr
    _no_leftovers(output)
    assert sorted(p.name for p in output.iterdir() if p.is_dir()) == sorted(CASES.values())
    assert {row["case"] for row in read_csv(output / "segcam_stats.csv")} == set(CASES.values()) | {"mean", "std"}
    case = output / "case_01_T1"
    summary = json.loads((case / "case_01_T1_segcam.json").read_text())
    assert summary["input"]["path"] == str(cli_data["nifti"])
    assert summary["input"]["shape"] == list(SHAPE)
    np.testing.assert_allclose(summary["input"]["affine"], NIFTI_AFFINE)
    assert summary["model"]["checkpoint"] == str(cli_data["checkpoint"])
    assert summary["model"]["network"] == "monai.networks.nets.UNet"
    assert summary["settings"]["layers"] == {"pre_head": "model.1", "bottleneck": "model.1.submodule"}
    assert summary["settings"]["roi_size"] == [16] and summary["settings"]["overlap"] == 0.5
    files = {entry["file"]: entry for entry in summary["files"]}
    assert set(files) | {"case_01_T1_segcam.json"} == {p.name for p in case.iterdir()}
    cam = files["case_01_T1_cam_hirescam_pre_head_class1.nii.gz"]
    assert (cam["class"], cam["layer"], cam["module"], cam["method"]) == (1, "pre_head", "model.1", "hirescam")
    assert cam["stats"]["max"] > 0 and len(cam["stats"]["peak_voxel"]) == 3
    assert 0 <= cam["stats"]["relevance_mass_region"] <= 1  # the region is the prediction
    pngs = [name for name, entry in files.items() if entry["kind"] == "png"]
    assert sorted(pngs) == sorted(
        ["case_01_T1_cam_hirescam_pre_head_class1.png", "case_01_T1_cam_hirescam_bottleneck_class1.png",
         "case_01_T1_cam_class1_panel.png"]
    )  # fmt: skip
    picture = imread(case / "case_01_T1_cam_hirescam_pre_head_class1.png")
    assert picture.shape[:2] == (450, 1200)  # plot_orthogonal_slices' 12 x 4.5 inches at 100 dpi
    assert picture[..., :3].std() > 0.01
    assert imread(case / "case_01_T1_cam_class1_panel.png").std() > 0.01
    assert "case_01_T1: " in results["formats"].stdout


def test_bundle_preprocessing_is_inverted(explained, cli_data):
    import nibabel as nib

    results, _, output = explained
    assert results["bundle"].returncode == 0, results["bundle"].stderr
    assert results["bundle"].stdout == ""
    assert [line for line in results["bundle"].stderr.splitlines() if "swigvarlink" not in line] == []  # --quiet
    _no_leftovers(output)
    for kind, case in (("nifti", "case_01_T1"), ("dicom", "dicom_series")):
        reference = _reference_grid(kind, cli_data[kind])
        summary = json.loads((output / case / f"{case}_segcam.json").read_text())
        assert summary["network_input_shape"] != [1, *SHAPE]  # the bundle resampled the image
        assert summary["classes"] == {"1": "block", "2": "rest"}
        assert summary["model"]["bundle_name"] == "tiny_test_bundle"
        assert summary["settings"]["roi_size"] == [16, 16, 16] and summary["settings"]["sw_batch_size"] == 2
        assert not list((output / case).glob("*.png"))
        for method in ("layercam", "gradcam", "scorecam"):  # all with the bundle's sliding windows
            image = nib.load(str(output / case / f"{case}_cam_{method}_pre_head_class1.nii.gz"))
            assert image.shape == SHAPE
            np.testing.assert_allclose(image.affine, reference, atol=1e-4)
            values = np.asarray(image.dataobj)
            assert values.min() >= 0 and values.max() <= 1  # --normalize


def test_box_region_equals_the_python_api(cli_runs, cli_data):
    """``--region box:4,5,3:10,12,8`` (corners included) is ``Box((4, 5, 3), (11, 13, 9))`` of the Python API, and
    ``--intensity-range -1 3 --zscore`` are MONAI's ``ScaleIntensityRange`` to [0, 1] then ``NormalizeIntensity``."""
    import nibabel as nib
    from monai.networks.nets import UNet
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange

    from monai_segcam import SegCAM
    from monai_segcam.cam import Box

    result, output = cli_runs["box"]
    assert result.returncode == 0, result.stderr
    case = output / "case_01_T1"
    summary = json.loads((case / "case_01_T1_segcam.json").read_text(encoding="utf-8"))
    assert summary["region_on_network_grid"] == {
        "kind": "box", "input_corners": [[4, 5, 3], [10, 12, 8]], "start": [4, 5, 3], "end": [11, 13, 9]
    }  # fmt: skip
    net = UNet(**NETWORK_ARGS)
    net.load_state_dict(torch.load(cli_data["checkpoint"], weights_only=True)["model"])
    image = torch.as_tensor(np.asarray(nib.load(str(cli_data["nifti"])).dataobj), dtype=torch.float32)[None]
    image = NormalizeIntensity(channel_wise=True)(ScaleIntensityRange(-1, 3, 0, 1, clip=True)(image))[None]
    expected = SegCAM(net, layers="pre_head", method="hirescam")(image, classes=1, region=Box((4, 5, 3), (11, 13, 9))).map
    saved = np.asarray(nib.load(str(case / "case_01_T1_cam_hirescam_pre_head_class1.nii.gz")).dataobj)
    assert expected.max() > 0
    np.testing.assert_allclose(saved, expected[0, 0].numpy(), rtol=1e-4, atol=1e-6 * float(expected.max()))


def test_voxel_region_follows_the_bundle_preprocessing(cli_runs):
    """A voxel of the input file is explained at the same world position on the bundle's reoriented, resampled grid:
    the chosen network-grid voxel is the nearest one, and the map's peak lies next to it in world coordinates."""
    import nibabel as nib

    result, output = cli_runs["voxel_bundle"]
    assert result.returncode == 0, result.stderr
    case = output / "case_01_T1"
    summary = json.loads((case / "case_01_T1_segcam.json").read_text(encoding="utf-8"))
    region = summary["region_on_network_grid"]
    assert region["kind"] == "voxel" and region["input_voxel"] == [5, 7, 9]
    network_affine = np.array(summary["network_input_affine"])
    np.testing.assert_allclose(np.linalg.norm(network_affine[:3, :3], axis=0), [1.0, 1.0, 1.5])  # the bundle's pixdim
    world = NIFTI_AFFINE @ np.array([5, 7, 9, 1.0])
    continuous = (np.linalg.inv(network_affine) @ world)[:3]
    assert np.abs(continuous - np.array(region["voxel"])).max() <= 0.5 + 1e-6
    saved = nib.load(str(case / "case_01_T1_cam_hirescam_pre_head_class1.nii.gz"))
    values = np.asarray(saved.dataobj)
    assert values.max() > 0
    peak = np.unravel_index(int(np.argmax(values)), values.shape)
    # pre_head feeds a 3x3x3 head: the map lives within one network voxel (<= 1.5 mm) of the explained voxel, and
    # interpolation back onto the input grid moves it by less than one input voxel (<= 2.5 mm)
    assert np.linalg.norm((saved.affine @ np.array([*peak, 1.0]) - world)[:3]) <= 4.0


def test_layers_lists_presets(explained):
    results, _, _ = explained
    result = results["layers"]
    assert result.returncode == 0, result.stderr
    for text in ("pre_head", "bottleneck", "encoder.0", "model.1.submodule", "(1, 4, 8, 8, 8)", "(1, 3, 16, 16, 16)"):
        assert text in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLE_DEMO / "models" / "model.pt").exists(), reason="demo bundle not built")
def test_demo_bundle(tmp_path):
    import nibabel as nib

    samples = sorted((BUNDLE_DEMO / "sample_data").glob("*.nii.gz"))
    assert samples, "the demo bundle ships sample_data/*.nii.gz"
    sample = samples[0]
    result = run_cli("explain", sample, "--bundle", BUNDLE_DEMO, "--layers", "bottleneck", "pre_head",
                     "--device", "cpu", "--output", tmp_path, "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    reference = nib.load(str(sample))
    case_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    cams = list(case_dir.glob("*_cam_*.nii.gz"))
    assert cams and list(case_dir.glob("*_cam_*.png"))
    for path in cams:
        image = nib.load(str(path))
        assert image.shape == reference.shape[:3]
        np.testing.assert_allclose(image.affine, reference.affine, atol=1e-4)


def test_amp_and_activation_budget_reach_the_engine(cli_runs):
    """``--amp --activation-budget 0.5`` (MiB): the engine that made the maps ran under autocast with a budget of
    512 KiB (the JSON records the engine's own settings), and the maps are finite."""
    import nibabel as nib

    result, output = cli_runs["amp"]
    assert result.returncode == 0, result.stderr
    case = output / "case_01_T1"
    settings = json.loads((case / "case_01_T1_segcam.json").read_text())["settings"]
    assert settings["amp"] is True and settings["activation_budget"] == 512 * 1024
    cam = nib.load(case / "case_01_T1_cam_gradcam_pre_head_class1.nii.gz").get_fdata()
    assert np.isfinite(cam).all() and cam.max() > 0
