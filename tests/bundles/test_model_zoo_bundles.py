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
