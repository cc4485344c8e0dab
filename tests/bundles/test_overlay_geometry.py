# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``bundles/segcam.json`` on a bundle in the style of model-zoo's renalStructures_CECT_segmentation (two loaded
phases concatenated by the bundle's own transform into a metadata-less ``image``, its own ``Invertd`` onto the artery
phase, a label loaded but never transformed), run as users run it (``python -m monai.bundle run``): the CAMs land
where the bundle inverts its prediction, named after the input file, label statistics left empty with one message;
and when the inversion cannot be determined, a clear error naming the override, never an identity affine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_segcam_bundles import OVERLAY, _env, copy_fixture_bundle, read_csv

CECT_LIKE = Path(__file__).resolve().parent / "cect_like"
# the phases' grid: array axes (i, j, k) -> world (-1.2 j, -1.0 i, 2.0 k): permuted, flipped, anisotropic
AFFINE = np.array([[0.0, -1.2, 0.0, 30.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 0.0, 2.0, -40.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (30, 26, 14)


@pytest.fixture
def cect_like(tmp_path) -> Path:
    """The fixture bundle with random weights and two cases of two phases and a label each."""
    root = copy_fixture_bundle(CECT_LIKE, tmp_path / "cect_like")
    (root / "data").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        for phase in ("art", "ven"):
            volume = rng.normal(50, 60, SHAPE).astype(np.float32)
            nib.save(nib.Nifti1Image(volume, AFFINE), root / "data" / f"patient{i}_{phase}.nii.gz")
        label = (rng.random(SHAPE) > 0.8).astype(np.uint8)
        nib.save(nib.Nifti1Image(label, AFFINE), root / "data" / f"patient{i}_seg.nii.gz")
    return root


def run_overlay(root: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    files = f"['configs/inference.json',{str(OVERLAY)!r}]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--output_dir", str(out), *overrides]
    return subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_overlay_inverts_cams_like_the_bundle(cect_like, tmp_path):
    out = tmp_path / "eval"
    result = run_overlay(cect_like, out)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    for i in range(2):
        artery = nib.load(cect_like / "data" / f"patient{i}_art.nii.gz")
        cam = nib.load(out / f"patient{i}_art_cam_hirescam_pre_head_class1.nii.gz")  # named after the input file
        assert cam.shape == artery.shape == SHAPE  # the original grid of the phase the bundle inverts to
        np.testing.assert_allclose(cam.affine, AFFINE, atol=1e-4)
        values = np.asarray(cam.dataobj)
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() > 0
        assert nib.load(out / str(i) / f"{i}_trans.nii.gz").shape[:3] == SHAPE  # the bundle's own prediction
    rows = [row for row in read_csv(out / "segcam_stats.csv") if row["status"] == "ok"]
    assert sorted(row["case"] for row in rows) == ["patient0_art", "patient1_art"]
    for row in rows:  # the label is loaded but not channel first: its statistics are left empty, the others are there
        assert row["relevance_mass_label"] == row["pointing_game_label"] == "", row
        assert 0 <= float(row["relevance_mass_region"]) <= 1 and float(row["max"]) > 0
    messages = [line for line in log.splitlines() if "label statistics left empty" in line]
    assert len(messages) == 1 and "not channel first" in messages[0], messages


@pytest.mark.slow
def test_undetermined_inversion_is_refused_then_overridden(cect_like, tmp_path):
    """Without the bundle's Invertd onto a loaded phase, the CAMs' geometry cannot be determined (the network input
    has no metadata): a clear error naming the override, and no CAM file; the override then gives the right grid."""
    config = json.loads((cect_like / "configs" / "inference.json").read_text())
    config["postprocessing"]["transforms"] = config["postprocessing"]["transforms"][1:]  # keep the no-op Invertd
    (cect_like / "configs" / "inference.json").write_text(json.dumps(config))
    out = tmp_path / "refused"
    result = run_overlay(cect_like, out)
    assert result.returncode != 0
    assert "Refusing to write a CAM without its geometry" in result.stderr and "--cam_orig_key artery" in result.stderr
    assert not list(out.glob("*_cam_*")) and not list(out.rglob(".tmp_*"))

    out = tmp_path / "overridden"
    result = run_overlay(cect_like, out, "--cam_orig_key", "artery")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    cam = nib.load(out / "patient0_art_cam_hirescam_pre_head_class1.nii.gz")
    assert cam.shape == SHAPE
    np.testing.assert_allclose(cam.affine, AFFINE, atol=1e-4)
