# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The CLI's case loop: a failed case is recorded per method and layer (occlusion's map is of the input)."""

from __future__ import annotations

import csv
from argparse import Namespace

from monai_segcam.cli.cases import run_cases
from monai_segcam.cli.io import CLIError
from monai_segcam.explainers import ExplainRequest


def test_failed_case_rows_name_the_layers_each_method_explains(tmp_path):
    def explain(name, inputs, label):
        raise CLIError(f"cannot read image {inputs}")

    args = Namespace(output=str(tmp_path), method=["hirescam", "occlusion"], classes=[1, 2], quiet=True, debug=False,
                     report=False, png=False, center=None)  # fmt: skip
    keys = {m: ExplainRequest(method=m, layers=("bottleneck", "pre_head")).result_keys for m in args.method}  # as built
    status = run_cases([("a", "a.nii.gz", None), ("b", "b.nii.gz", None)], explain, keys, args)
    assert status == 1
    with open(tmp_path / "segcam_stats.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    found = {(r["case"], r["method"], r["layer"], r["class"]) for r in rows}
    expected = {(case, "hirescam", layer, c) for case in "ab" for layer in ("bottleneck", "pre_head") for c in "12"}
    expected |= {(case, "occlusion", "input", c) for case in "ab" for c in "12"}
    assert found == expected
    assert all(r["status"] == "failed" and "cannot read image" in r["error"] for r in rows)
