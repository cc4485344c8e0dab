# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""A smoke run of the families benchmark (CAMs, input attributions, occlusion side by side): every metric of a CAM
row and an input-attribution row is a finite number in its range, and the table has the expected columns."""

from __future__ import annotations

import math
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "planted_evidence")


@pytest.mark.slow  # about a minute on 2 shared cores: every metric needs its own explanations
def test_families_smoke():
    sys.path.insert(0, os.path.abspath(BENCH))
    try:
        import families
    finally:
        sys.path.pop(0)
    rows = families.run_families("two_objects", num=1, steps=2,
                                 rows=(("CAM", "hirescam", "pre_head"), ("input", "gradient", "input")))  # fmt: skip
    assert [(row["family"], row["method"]) for row in rows] == [("-", "random"), ("CAM", "hirescam"),
                                                                ("input", "gradient")]  # fmt: skip
    for row in rows[1:]:
        assert all(math.isfinite(row[m]) for m in families.METRICS["two_objects"]), row
        assert 0 <= row["Gini"] <= 1 and 0 <= row["entropy"] <= math.log(40**3) and row["max-sens."] >= 0
        assert -1 <= row["random logit"] <= 1
    table = families.families_table("two_objects", rows)
    header = table.splitlines()[0]
    for column in ("family", "method", "layer", *families.METRICS["two_objects"]):
        assert f"| {column} |" in header
    assert len(table.splitlines()) == 2 + 3 and "**" in table  # the best of each column in bold
