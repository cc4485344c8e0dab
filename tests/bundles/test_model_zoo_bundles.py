# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The generic overlay ``bundles/segcam.json`` on the two lightest model-zoo bundles as shipped (configs copied under
``benchmarks/bundle_sweep/model_zoo/``), with random weights and a small synthetic case: spleen_ct_segmentation
(sliding windows) with the overlay's defaults, segmentation_template (YAML, whole-volume ``SimpleInferer``) with
``bottleneck`` and ``pre_head``. The sweep over all 13 bundles, DiNTS and UNesT included (a minute or more each on
2 CPU cores), is ``benchmarks/bundle_sweep/run_sweep.py`` (docs/bundles.md)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

SWEEP = Path(__file__).resolve().parents[2] / "benchmarks" / "bundle_sweep" / "run_sweep.py"


def _sweep():
    spec = importlib.util.spec_from_file_location("run_sweep", SWEEP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name, cam_args", [
    ("spleen_ct_segmentation", []),
    ("segmentation_template", ["--cam_layers", "['bottleneck','pre_head']"]),
])  # fmt: skip
def test_model_zoo_bundle_with_the_overlay(name, cam_args, tmp_path):
    sweep = _sweep()
    row = sweep.run_bundle(name, sweep.BUNDLES[name], tmp_path, cam_args, timeout=600)
    log = (tmp_path / name / "sweep_log.txt").read_text()
    assert row["status"] == "ran", log[-4000:]
    layers = ["bottleneck", "pre_head"] if cam_args else ["pre_head"]
    assert row["layers"] == ", ".join(sorted(layers)) and row["cams"] == len(layers)  # class 1, once per layer
    assert row["grid"] == "yes"  # every CAM NIfTI has the original image's shape and affine
    stats = next((tmp_path / name / "sweep_out").rglob("segcam_stats.csv"))
    rows = [r for r in csv.DictReader(stats.open()) if r["case"] not in ("mean", "std")]
    assert sorted(r["layer"] for r in rows) == layers and all(r["status"] == "ok" for r in rows)
    assert all(float(r["max"]) > 0 and int(float(r["region_voxels"])) > 0 for r in rows), rows


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["classes", "point"])
def test_vista3d_bundle_prompts_with_the_overlay(prompt, tmp_path):
    """The vista3d bundle as shipped (its Vista3dEvaluator and Vista3dInferer), network_def vista3d132 with 8 features
    and random weights, 64³ windows for CPU time: class prompts [3, 5] from its input dict (one CAM per prompt), or a
    foreground click given on the original image (its evaluator maps it onto the network grid)."""
    sweep = _sweep()
    extra = {"patch_size": [64, 64, 64]}
    if prompt == "point":
        extra.update(sweep.vista3d_point_prompt([[32, 28, 20]], [1]))
    row = sweep.run_bundle("vista3d", sweep.BUNDLES["vista3d"], tmp_path, [], timeout=900, extra=extra)
    log = (tmp_path / "vista3d" / "sweep_log.txt").read_text()
    assert row["status"] == "ran", log[-4000:]
    assert row["grid"] == "yes"  # every CAM NIfTI has the original image's shape and affine
    out = tmp_path / "vista3d" / "sweep_out"
    names = sorted(p.name for p in out.rglob("*_cam_*.nii.gz"))
    expected = ["class3", "class5"] if prompt == "classes" else ["class0"]
    assert names == [f"ct_1_cam_hirescam_pre_head_{c}.nii.gz" for c in expected], names
    rows = [r for r in csv.DictReader(next(out.rglob("segcam_stats.csv")).open()) if r["case"] not in ("mean", "std")]
    assert all(r["status"] == "ok" and float(r["max"]) > 0 and int(float(r["region_voxels"])) > 0 for r in rows), rows
