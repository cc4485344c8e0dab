# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Errors a user can act on: one line on stderr, non-zero exit status, no traceback (unless ``--debug``), and no
partial outputs. The subprocesses run up front in the ``cli_runs`` fixture."""

from __future__ import annotations

import csv

import pytest
import torch

ERRORS = {
    "missing_image": ["image not found:", "absent.nii.gz"],
    "corrupt": ["cannot read image", "corrupt.nii.gz"],
    "channels": ["gives 2 channel(s) but the network expects 1"],
    "checkpoint": ["does not match the network UNet", "shape mismatch (checkpoint vs network): model.", "wrong.pt"],
    "unknown_layer": ["Unknown layer 'model.1.submodul'", "Closest names", "model.1.submodule"],
    "cuda": ["--device cuda:0 requested but"],
    "no_label": ["--region fn needs the ground truth: give --label FILE"],
    "voxel_outside": ["region voxel: voxel (5, 7, 16) lies outside the image (shape (24, 20, 16))"],
}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "swigvarlink" not in line]  # ITK's SWIG notice at exit


@pytest.mark.parametrize("name", list(ERRORS))
def test_actionable_error(cli_runs, name):
    if name == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result, output = cli_runs[name]
    assert result.returncode == 1
    assert result.stdout == ""
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("monai-segcam: error: "), result.stderr
    for text in ERRORS[name]:
        assert text in lines[0]
    assert list(output.iterdir()) == []  # no case folder, no staging folder


def test_malformed_region_is_a_usage_error(cli_runs):
    result, output = cli_runs["bad_region"]
    assert result.returncode == 2  # argparse's status for bad arguments, before anything is loaded
    assert "argument --region: unknown region 'box:1,2,3'" in result.stderr and "voxel:I,J,K" in result.stderr
    assert list(output.iterdir()) == []


def test_debug_shows_traceback(cli_runs):
    result, _ = cli_runs["debug"]
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "Unknown layer 'model.9'" in result.stderr


def test_failed_case_leaves_nothing(cli_runs):
    result, output = cli_runs["one_case_fails"]
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert "cannot read image" in lines[0] and "1 of 2 case(s) failed" in lines[-1]
    assert sorted(p.name for p in output.iterdir() if p.is_dir()) == ["case_01_T1"]
    assert {p.name for p in (output / "case_01_T1").iterdir()} == {
        "case_01_T1_seg.nii.gz", "case_01_T1_cam_hirescam_pre_head_class1.nii.gz", "case_01_T1_segcam.json",
        "case_01_T1_structures.csv",
    }  # fmt: skip
    with open(output / "segcam_stats.csv", newline="") as stream:  # the failed case is recorded, the batch went on
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    assert rows["case_01_T1"]["status"] == "ok" and rows["corrupt"]["status"] == "failed"
    assert "cannot read image" in rows["corrupt"]["error"]
