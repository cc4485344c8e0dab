# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain --report``: the review report of the run, read back from the command's own files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import network_options, run_cli


def test_explain_writes_a_report_of_its_cases(cli_data, tmp_path):
    out = tmp_path / "cams"
    result = run_cli(
        "explain", cli_data["nifti"], cli_data["mha"], *network_options(cli_data["checkpoint"]), "--label",
        cli_data["label"], cli_data["label"], "--layers", "pre_head", "bottleneck", "--classes", "1", "2",
        "--roi-size", "16", "--no-png", "--report", "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"review report: {out / 'report' / 'index.html'}" in result.stdout
    with open(out / "report" / "report.json", encoding="utf-8") as stream:
        cases = {case["name"]: case for case in json.load(stream)["cases"]}
    assert sorted(cases) == ["case_01_T1", "scan_b"]
    label = np.asarray(nib.load(cli_data["label"]).dataobj)
    for name in ("case_01_T1",):  # the label lies on this image's grid: Dice on the files themselves
        with open(out / name / f"{name}_segcam.json", encoding="utf-8") as stream:
            summary = json.load(stream)
        seg = np.asarray(nib.load(out / name / f"{name}_seg.nii.gz").dataobj)
        for c in ("1", "2"):
            a, b = seg == int(c), label == int(c)
            expected = 2 * (a & b).sum() / (a.sum() + b.sum())
            assert cases[name]["dice"].get(c) == (pytest.approx(expected) if np.isfinite(expected) else None)
        written = {(f["layer"], f["method"], f["class"]): f["stats"] for f in summary["files"] if f["kind"] == "cam"}
        maps = {(m["layer"], m["method"], m["class"]): m for m in cases[name]["maps"]}
        assert sorted(maps) == sorted(written) and len(maps) == 4
        for key, stats in written.items():  # the command's own mass in its prediction is the report's statistic
            expected = stats["relevance_mass_region"]
            assert maps[key]["relevance_mass_region"] == (None if expected is None else pytest.approx(expected))
            assert maps[key]["region_voxels"] == stats["region_voxels"]
    assert (out / "report" / "cases" / "scan_b.js").stat().st_size > 1000
