# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Planted-evidence generator (determinism, where the evidence is) and a smoke run of the benchmark pipeline."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from scipy import ndimage

from monai_segcam.data.planted import make_marker_case, make_planted_batch, make_two_objects_case

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "planted_evidence")


@pytest.mark.parametrize("make", [make_marker_case, make_two_objects_case])
def test_deterministic(make):
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_marker_evidence_where_planted():
    batch = make_planted_batch("marker", range(40))
    assert set(batch["class"].tolist()) == {1, 2}
    for i in range(40):
        structure, marker, distractor = batch["structure"][i, 0], batch["marker"][i, 0], batch["distractor"][i, 0]
        label, image = batch["label"][i, 0], batch["image"][i, 0]
        assert set(np.unique(label[structure]).tolist()) == {batch["class"][i]} and not label[~structure].any()
        assert marker.any() == (batch["class"][i] == 2)
        to_structure = ndimage.distance_transform_edt(~structure)
        if marker.any():  # a 5³ cube just outside the structure
            assert marker.sum() == 125 and not (marker & structure).any()
            assert 1.0 <= to_structure[marker].min() <= 3.0  # outside, at most touching
            assert image[marker].mean() > image[structure].mean() + 0.5
        if distractor.any():  # the same cube, far from the structure and the marker
            assert distractor.sum() == 125 and to_structure[distractor].min() >= 7.0
            if marker.any():
                assert ndimage.distance_transform_edt(~marker)[distractor].min() >= 7.0


def test_two_objects_evidence_where_planted():
    for seed in range(20):
        case = make_two_objects_case(seed=seed)
        big, small = case["objects"]
        assert big.sum() > 2 * small.sum() > 0
        assert ndimage.distance_transform_edt(~big)[small].min() >= 6.0
        _, count = ndimage.label(case["label"][0])
        assert count == 2 and np.array_equal(case["label"][0] > 0, big | small)
        assert not (case["distractor"][0] & (big | small)).any()


def test_benchmark_smoke(tmp_path):
    """One volume, two methods, one layer, 2-step curves: the table has the expected columns and finite numbers
    (the randomisation correlation of an all-zero map is undefined)."""
    sys.path.insert(0, os.path.abspath(BENCH))
    try:
        import run
    finally:
        sys.path.pop(0)
    for task in ("marker", "two_objects"):
        rows, info, figure = run.run_task(
            task, num=1, methods=("gradcam", "hirescam"), layers=("bottleneck",), steps=2, randomize_cases=1
        )
        assert {(r["method"], r["layer"]) for r in rows} == {("random", "-"), ("gradcam", "bottleneck"),
                                                             ("hirescam", "bottleneck")}
        for row in rows:
            assert all(math.isfinite(row[m]) for m in run.METRICS[task]), row
            if row["method"] != "random":  # a zero map has no rank correlation
                assert math.isfinite(row[run.RANDOMIZATION]) or row["zero"], row
        table = run.format_table(task, rows)
        header = table.splitlines()[0]
        for column in ("method", "layer", *run.METRICS[task], run.RANDOMIZATION, "zero maps"):
            assert f"| {column} |" in header
        assert len(table.splitlines()) == 2 + 3
        doc = tmp_path / "doc.md"
        doc.write_text(f"# intro\n\n{run.BEGIN}\nold\n{run.END}\n\nprose\n")
        run.write_doc(run.report(task, rows, info), str(doc))
        text = doc.read_text(encoding="utf-8")
        assert "old" not in text and text.startswith("# intro") and text.endswith("prose\n") and table in text
        assert set(figure["cams"]) == {"bottleneck"} and figure["image"].shape == (40, 40, 40)


def test_benchmark_perturbation_rows(tmp_path):
    """The perturbation rows (layer "input") get every metric and go to their own markers, leaving the CAM table."""
    sys.path.insert(0, os.path.abspath(BENCH))
    try:
        import run
    finally:
        sys.path.pop(0)
    rows, info, _ = run.run_task(
        "marker", num=1, methods=(), layers=(), steps=2, randomize_cases=1, perturbation=("input_x_gradient",)
    )
    assert [(r["method"], r["layer"]) for r in rows] == [("random", "-"), ("input_x_gradient", "input")]
    assert all(math.isfinite(rows[1][m]) for m in (*run.METRICS["marker"], run.RANDOMIZATION))
    doc = tmp_path / "doc.md"
    begin, end = run.PERTURBATION_MARKERS
    doc.write_text(f"{run.BEGIN}\ncam table\n{run.END}\n{begin}\nold\n{end}\n")
    run.write_doc(run.report("marker", rows, info), str(doc), run.PERTURBATION_MARKERS)
    text = doc.read_text(encoding="utf-8")
    assert "cam table" in text and "old" not in text and "| input_x_gradient | input |" in text


def test_benchmark_variant_rows_use_their_options():
    """The option variants (Score-CAM's reduction, Grad-CAM++ on ReLU(A)) run with their options: the two
    Score-CAM reductions give different maps."""
    sys.path.insert(0, os.path.abspath(BENCH))
    try:
        import run
    finally:
        sys.path.pop(0)
    rows, _, figure = run.run_task("two_objects", num=1, methods=("scorecam[mean]", "scorecam[sum]"),
                                   layers=("decoder.0",), steps=2, randomize_cases=0)  # fmt: skip
    assert [r["method"] for r in rows] == ["random", "scorecam[mean]", "scorecam[sum]"]
    maps = figure["cams"]["decoder.0"]
    assert not np.allclose(maps["scorecam[mean]"], maps["scorecam[sum]"])
    assert run.VARIANTS["scorecam[sum]"] == ("scorecam", {"score_reduction": "sum"})
