# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Seg-CAM bundle configs run through ``python -m monai.bundle run`` (and ``torchrun``) as users run them.

- ``bundles/segcam_demo/configs/inference.json``: segmentation plus CAMs (NIfTI on the original grid, PNG, CSV);
- ``evaluate.json`` overlay: Dice, CAM statistics inside the label, false-positive/negative CAMs;
- ``multi_gpu_evaluate.json`` overlay under ``torchrun`` (gloo on CPU): each case once, same maps as one process;
- ``train_with_cams.json`` overlay: CAMs per validation epoch of a short training into temporary folders;
- ``bundles/segcam.json``: the generic overlay on a model-zoo style (spleen-like) bundle, including a CAM peak planted
  at a known voxel of the preprocessed grid that must land at the same world position in the saved map.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from matplotlib import image as plt_image
from monai.bundle import ConfigParser, create_workflow

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "segcam_demo"
OVERLAY = REPO_ROOT / "bundles" / "segcam.json"
SPLEEN_LIKE = Path(__file__).resolve().parent / "spleen_like"
SAMPLES = sorted((BUNDLE / "sample_data").glob("image*.nii.gz"))
CONFIGS = BUNDLE / "configs"
INFERENCE, EVALUATE = str(CONFIGS / "inference.json"), str(CONFIGS / "evaluate.json")
MULTI_GPU = str(CONFIGS / "multi_gpu_evaluate.json")


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def run_bundle(configs: list[str], *overrides: str, cwd: Path = BUNDLE, nproc: int = 0) -> str:
    """``python -m monai.bundle run --config_file "[...]" overrides`` (under ``torchrun`` when ``nproc``); the log."""
    files = "[" + ",".join(repr(c) for c in configs) + "]"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
    launcher.append(f"--nproc_per_node={nproc}")
    cmd = [*(launcher if nproc else [sys.executable]), "-m", "monai.bundle", "run", "--config_file", files, *overrides]
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return log


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asanyarray(image.dataobj).astype(np.float64), image.affine


def assert_on_original_grid(path: Path, original: Path) -> np.ndarray:
    data, affine = load(path)
    image = nib.load(original)
    assert data.shape == image.shape, f"{path.name}: shape {data.shape} != original {image.shape}"
    np.testing.assert_allclose(affine, image.affine, atol=1e-4, err_msg=path.name)
    return data


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def case_name(image: Path) -> str:
    return image.name.replace(".nii.gz", "")


def test_inference_configs_keep_infer_properties():
    """MONAI Label/Deploy/FL drive a bundle through the InferProperties ids: every combination keeps them."""
    spleen_like = str(SPLEEN_LIKE / "configs" / "inference.json")
    for configs in ([INFERENCE], [INFERENCE, EVALUATE], [spleen_like, str(OVERLAY)]):
        workflow = create_workflow(config_file=configs, workflow_type="inference")
        assert workflow.check_properties() == [], configs


def test_overlay_follows_the_bundles_activation():
    """The overlay explains sigmoid (multi-label) outputs when the bundle's postprocessing applies a sigmoid."""
    spleen_like = str(SPLEEN_LIKE / "configs" / "inference.json")
    parser = ConfigParser()
    parser.read_config([spleen_like, str(OVERLAY)])
    assert parser.get_parsed_content("cam_handler").multi_label is False  # softmax + argmax
    parser = ConfigParser()
    parser.read_config([spleen_like, str(OVERLAY)])
    parser["postprocessing"]["transforms"] = [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
    ]
    assert parser.get_parsed_content("cam_handler").multi_label is True


@pytest.mark.slow
def test_demo_inference_writes_cams(tmp_path):
    """The README command (from the bundle folder) writes segmentations and CAMs on the original grid and says where."""
    log = run_bundle(["configs/inference.json"], "--output_dir", str(tmp_path))
    assert f"written to {tmp_path}" in log
    for image in SAMPLES:
        name = case_name(image)
        assert_on_original_grid(tmp_path / f"{name}_seg.nii.gz", image)
        for layer in ("bottleneck", "pre_head"):
            for c in (1, 2):
                stem = f"{name}_cam_hirescam_{layer}_class{c}"
                cam = assert_on_original_grid(tmp_path / f"{stem}.nii.gz", image)
                assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() > 0, stem
                png = tmp_path / f"{stem}.png"
                assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
    rows = [row for row in read_csv(tmp_path / "segcam_stats.csv") if row["status"] == "ok"]
    assert len(rows) == len(SAMPLES) * 2 * 2
    for figure in sorted((REPO_ROOT / "docs" / "figures").glob("demo_*.png")):  # the README's pictures are these outputs
        produced = plt_image.imread(tmp_path / figure.name.removeprefix("demo_"))
        committed = plt_image.imread(figure)
        assert produced.shape == committed.shape and np.abs(produced - committed).mean() < 0.01, figure.name


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> Path:
    """One single-process evaluation of the three sample cases (one layer, no PNG to keep it short)."""
    out = tmp_path_factory.mktemp("evaluate")
    run_bundle([INFERENCE, EVALUATE], "--output_dir", str(out), "--cam_layers", "pre_head", "--cam_save_png", "False")
    return out


@pytest.mark.slow
def test_demo_evaluation(evaluation):
    out = evaluation
    assert 0.85 < _metric(out) <= 1.0
    raw = {Path(row["filename"]).name: row for row in read_csv(out / "val_mean_dice_raw.csv")}
    assert sorted(raw) == [image.name for image in SAMPLES]
    assert all(float(row["class0"]) > 0.8 and float(row["class1"]) > 0.8 for row in raw.values())  # labels 1, 2
    with open(out / "report" / "report.json") as stream:  # the review report's Dice is MONAI's MeanDice per case
        report = {case["name"]: case["dice"] for case in json.load(stream)["cases"]}
    for name, row in raw.items():
        expected = [float(row["class0"]), float(row["class1"])]
        assert [report[case_name(Path(name))][c] for c in ("1", "2")] == pytest.approx(expected, rel=1e-5)
    rows = [row for row in read_csv(out / "segcam_stats.csv") if row["status"] == "ok"]
    assert len(rows) == len(SAMPLES) * 2
    for row in rows:  # the predicted organ's CAM lies mostly inside the organ's label
        assert 0.5 < float(row["relevance_mass_label"]) <= 1.0, row
    for image in SAMPLES:
        name = case_name(image)
        assert_on_original_grid(out / f"{name}_seg.nii.gz", image)
        for c in (1, 2):
            assert_on_original_grid(out / f"{name}_cam_hirescam_pre_head_class{c}.nii.gz", image)
            for error in ("fp", "fn"):
                path = out / f"cam_{error}" / f"{name}_cam_hirescam_pre_head_class{c}.nii.gz"
                cam = assert_on_original_grid(path, image)
                assert np.isfinite(cam).all() and cam.min() >= 0, (error, name, c)
    for error in ("fp", "fn"):  # each error CAM explains the error region of its case and class
        error_rows = read_csv(out / f"cam_{error}" / f"segcam_stats_{error}.csv")
        error_rows = [row for row in error_rows if row["status"] == "ok"]
        assert len(error_rows) == len(SAMPLES) * 2
        assert all(float(row["region_voxels"]) > 0 for row in error_rows), error  # a 0.9 Dice leaves some errors


def _metric(out: Path) -> float:
    with open(out / "metrics.csv") as stream:  # MetricsSaver writes "name<TAB or comma>value" lines
        name, value = re.split(r"[\t,]", stream.readline().strip())
    assert name == "val_mean_dice"
    return float(value)


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(evaluation, tmp_path):
    """2 processes (gloo, CPU): every case written once, by one rank, with the single-process maps and metrics."""
    log = run_bundle([INFERENCE, EVALUATE, MULTI_GPU], "--output_dir", str(tmp_path), "--cam_layers", "pre_head",
                     "--cam_save_png", "False", nproc=2)  # fmt: skip
    for image in SAMPLES:
        written = re.findall(rf"writing: \S*{case_name(image)}_seg\.nii\.gz", log)
        assert len(written) == 1, (image.name, written)
    single = sorted(p.relative_to(evaluation) for p in evaluation.rglob("*.nii.gz"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.nii.gz")) == single
    assert len(single) == len(SAMPLES) * (1 + 2 * 3)  # seg + (pred, fp, fn) x 2 classes
    for relative in single:
        distributed, affine = load(tmp_path / relative)
        reference, reference_affine = load(evaluation / relative)
        np.testing.assert_allclose(affine, reference_affine, atol=1e-6)
        np.testing.assert_allclose(distributed, reference, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(reference).max()))
    assert math.isclose(_metric(tmp_path), _metric(evaluation), rel_tol=1e-6)
    with open(tmp_path / "report" / "report.json") as stream:  # rank 0 wrote the review report of every case
        assert [case["name"] for case in json.load(stream)["cases"]] == [case_name(image) for image in SAMPLES]
    for csv_name in ("segcam_stats.csv", "cam_fp/segcam_stats_fp.csv", "cam_fn/segcam_stats_fn.csv"):
        rows, reference = read_csv(tmp_path / csv_name), read_csv(evaluation / csv_name)
        assert [(r["case"], r["class"]) for r in rows] == [(r["case"], r["class"]) for r in reference]  # once each
        for row, ref in zip(rows, reference):
            for column in ("max", "mean", "relevance_mass_region", "relevance_mass_label"):
                assert math.isclose(float(row[column]), float(ref[column]), rel_tol=1e-3, abs_tol=1e-6), (row, ref)


@pytest.mark.slow
def test_train_with_cams_per_validation_epoch(tmp_path):
    committed = BUNDLE / "models" / "model.pt"
    digest = hashlib.sha256(committed.read_bytes()).hexdigest()
    run_bundle(
        ["configs/train.json", "configs/train_with_cams.json"],
        "--dataset_dir", str(tmp_path / "data"),
        "--ckpt_dir", str(tmp_path / "models"),
        "--output_dir", str(tmp_path / "eval"),
        "--num_train", "2",
        "--num_val", "1",
        "--phantom_shape", "[56, 56, 48]",
        "--max_epochs", "2",
        "--val_interval", "1",
    )  # fmt: skip
    assert hashlib.sha256(committed.read_bytes()).hexdigest() == digest
    assert (tmp_path / "models" / "model.pt").exists()
    for epoch in (1, 2):
        folder = tmp_path / "eval" / "cams" / f"epoch_{epoch:04d}"
        for layer in ("bottleneck", "pre_head"):
            for c in (1, 2):
                cam, _affine = load(folder / f"image002_cam_hirescam_{layer}_class{c}.nii.gz")
                assert cam.shape == (56, 56, 48) and np.isfinite(cam).all()  # the validation (preprocessed) grid
                assert (folder / f"image002_cam_hirescam_{layer}_class{c}.png").stat().st_size > 1000
        rows = read_csv(folder / "segcam_stats.csv")
        assert {row["epoch"] for row in rows if row["status"] == "ok"} == {str(epoch)}
        report = tmp_path / "eval" / "cams" / "report" / f"epoch_{epoch:04d}"  # the review report of the epoch
        assert (report / "cases" / "image002.js").stat().st_size > 1000 and (report / "index.html").exists()
    assert 'href="epoch_0002/index.html"' in (tmp_path / "eval" / "cams" / "report" / "index.html").read_text()


# generic overlay on a model-zoo style bundle -----------------------------------------------------------------------

# original grid: array axes (i, j, k) -> world (-1.2 j, -1.0 i, 3.0 k): permuted, flipped, anisotropic
SPLEEN_AFFINE = np.array([[0.0, -1.2, 0.0, 30.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 0.0, 3.0, -40.0], [0.0, 0.0, 0.0, 1.0]])
SPLEEN_SHAPE = (48, 40, 20)


def copy_fixture_bundle(source: Path, root: Path) -> Path:
    """A copy of a fixture bundle at ``root`` with random weights (seed 0) of its ``network_def`` in
    ``models/model.pt``."""
    shutil.copytree(source, root)
    parser = ConfigParser()
    parser.read_config(root / "configs" / "inference.json")
    torch.manual_seed(0)
    (root / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture
def spleen_like(tmp_path) -> Path:
    """The spleen-like fixture bundle with random weights in ``models/model.pt`` and two CT-like volumes."""
    root = copy_fixture_bundle(SPLEEN_LIKE, tmp_path / "spleen_like")
    (root / "data" / "imagesTs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        volume = rng.normal(50, 60, SPLEEN_SHAPE).astype(np.int16)
        nib.save(nib.Nifti1Image(volume, SPLEEN_AFFINE), root / "data" / "imagesTs" / f"spleen_{i}.nii.gz")
    return root


def _spleen_run(root: Path, out: Path, *overrides: str) -> str:
    configs = ["configs/inference.json", str(OVERLAY)]
    return run_bundle(configs, "--dataset_dir", str(root / "data"), "--output_dir", str(out), *overrides, cwd=root)


@pytest.mark.slow
def test_overlay_on_spleen_like_bundle(spleen_like, tmp_path):
    out = tmp_path / "eval"
    _spleen_run(spleen_like, out)
    for i in range(2):
        image = spleen_like / "data" / "imagesTs" / f"spleen_{i}.nii.gz"
        assert_on_original_grid(out / f"spleen_{i}" / f"spleen_{i}_trans.nii.gz", image)  # the bundle's own output
        cam = assert_on_original_grid(out / f"spleen_{i}_cam_hirescam_pre_head_class1.nii.gz", image)
        assert np.isfinite(cam).all() and cam.min() >= 0
        assert (out / f"spleen_{i}_cam_hirescam_pre_head_class1.png").stat().st_size > 1000
    assert len([row for row in read_csv(out / "segcam_stats.csv") if row["status"] == "ok"]) == 2


@pytest.mark.slow
def test_overlay_with_an_input_attribution_and_a_contrast(spleen_like, tmp_path):
    """``cam_method`` takes an input attribution (its key ``input``, inverted like the CAMs) and ``cam_contrast``."""
    out = tmp_path / "eval"
    _spleen_run(spleen_like, out, "--cam_method", "gradient", "--cam_contrast", "0", "--cam_save_png", "false")
    for i in range(2):
        image = spleen_like / "data" / "imagesTs" / f"spleen_{i}.nii.gz"
        cam = assert_on_original_grid(out / f"spleen_{i}_cam_gradient_input_class1.nii.gz", image)
        assert np.isfinite(cam).all() and cam.max() > 0
    rows = [row for row in read_csv(out / "segcam_stats.csv") if row["status"] == "ok"]
    assert [(row["layer"], row["method"]) for row in rows] == [("input", "gradient")] * 2


@pytest.mark.slow
def test_overlay_planted_peak_lands_at_its_world_position(spleen_like, tmp_path):
    """Explain one voxel of the preprocessed (RAS, 1.5 x 1.5 x 2 mm) grid at the network output layer: the raw
    HiResCAM there is the logit at that voxel and zero elsewhere, so after Invertd the saved map's peak must lie within
    one original voxel of that voxel's world position."""
    voxel = (21, 9, 11)
    out = tmp_path / "eval"
    _spleen_run(spleen_like, out, "--cam_layers", "model.2", "--cam_region", f"$monai_segcam.Voxel({voxel})",
                "--cam_classes", "[0, 1]", "--cam_handler#relu", "$False", "--cam_save_png", "False")  # fmt: skip
    parser = ConfigParser()
    parser.read_config(spleen_like / "configs" / "inference.json")
    parser["bundle_root"] = str(spleen_like)
    image = spleen_like / "data" / "imagesTs" / "spleen_0.nii.gz"
    preprocessed = parser.get_parsed_content("preprocessing")({"image": str(image)})["image"]
    assert not np.allclose(preprocessed.affine.numpy(), SPLEEN_AFFINE)  # Orientationd + Spacingd changed the grid
    world = preprocessed.affine.numpy() @ np.array([*voxel, 1.0])
    expected = (np.linalg.inv(SPLEEN_AFFINE) @ world)[:3]  # fractional voxel index in the original grid
    for c in (0, 1):
        cam = assert_on_original_grid(out / f"spleen_0_cam_hirescam_model.2_class{c}.nii.gz", image)
        peak = np.unravel_index(np.argmax(np.abs(cam)), cam.shape)
        assert np.abs(cam).max() > 0, c
        assert np.all(np.abs(np.array(peak) - expected) <= 1.0), (c, peak, expected)
        assert np.count_nonzero(cam) <= 27, c  # one voxel, spread by the linear resampling only
