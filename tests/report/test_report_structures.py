# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The report's heatmaps of relevance per structure, in headless Chromium: a case page's cells hold each map's share
of positive relevance in each structure of the segmentation (planted: known in closed form), coloured by it, and the
index page holds their mean over the cases."""

from __future__ import annotations

import numpy as np
import pytest
from report_helpers import PLANTED, SHAPE, Browser, planted_case, relevance

from monai_segcam.outputs import structure_rows
from monai_segcam.report import SegCAMReport

NAMES = {0: "background", 1: "organ", 2: "lesion"}


@pytest.fixture(scope="module")
def browser():
    browser = Browser()
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    report = SegCAMReport(folder, class_names={1: "organ", 2: "lesion"}, max_size=32)
    for i, (name, outside) in enumerate(PLANTED.items()):
        case = planted_case(outside, seed=i)
        maps = {(layer, method): np.asarray(cam)[None] for (layer, method, c), cam in case["cams"].items() if c == 1}
        rows = structure_rows({key: value[0] for key, value in maps.items()}, [1], np.asarray(case["segmentation"])[0],
                              names=NAMES)  # fmt: skip
        report.add_case(name, case["image"], case["segmentation"], case["cams"], label=case["label"], structures=rows)
    report.write()
    return folder


def _cells(page, selector: str) -> dict[tuple[str, str], dict]:
    """``{(row header, column header): {share, text, alpha}}`` of a heatmap table."""
    return {
        (cell["row"], cell["column"]): cell
        for cell in page.eval_on_selector_all(
            f"{selector} td.heat",
            """cells => cells.map(td => ({
                row: td.parentElement.querySelector('th').textContent,
                column: td.closest('table').querySelectorAll('thead th')[td.cellIndex].textContent,
                share: parseFloat(td.dataset.share), text: td.textContent, tip: td.title,
                alpha: parseFloat(getComputedStyle(td).backgroundColor.split(',')[3] ?? '1')}))""",
        )
    }


def test_case_heatmap_holds_the_planted_shares(browser, report_dir):
    browser.errors.clear()
    for name, outside in PLANTED.items():
        page = browser.open(report_dir / "cases" / f"{name}.html")
        cells = _cells(page, "table.structures")
        row = "pre_head · hirescam · class 1 (organ)"
        assert {column for r, column in cells if r == row} == {"background", "organ", "lesion"}
        organ, background = cells[(row, "organ")], cells[(row, "background")]
        assert organ["share"] == pytest.approx(relevance(outside), abs=1e-6)  # INSIDE lies in the organ
        assert background["share"] == pytest.approx(1 - relevance(outside), abs=1e-6)
        assert cells[(row, "lesion")]["share"] == 0.0
        assert organ["text"] == f"{100 * relevance(outside):.1f}%"
        assert organ["alpha"] == pytest.approx(relevance(outside), abs=2e-3)  # coloured by the share
        bottleneck = cells[("bottleneck · hirescam · class 1 (organ)", "organ")]
        assert bottleneck["share"] == pytest.approx(1.0)  # the bottleneck map is the organ
        assert organ["tip"] == f"share {relevance(outside):.4f}, density {32 / 384:.4g}"  # 32 voxels of 1 in 384
        page.close()
    assert browser.errors == []


def test_index_heatmap_holds_the_cohort_means(browser, report_dir):
    browser.errors.clear()
    page = browser.open(report_dir / "index.html")
    assert "over 4 cases" in page.inner_text("table.structures caption")
    cells = _cells(page, "table.structures")
    mean = np.mean([relevance(outside) for outside in PLANTED.values()])
    organ = cells[("pre_head · hirescam · class 1 (organ)", "organ")]
    assert organ["share"] == pytest.approx(mean, abs=1e-6)
    spread = np.std([relevance(outside) for outside in PLANTED.values()])
    assert f"share {mean:.4f} ± {spread:.4f}" in organ["tip"] and "over 4 case(s)" in organ["tip"]
    assert browser.errors == []
    page.close()


def test_report_without_structures_has_no_heatmap(tmp_path):
    report = SegCAMReport(tmp_path, max_size=16)
    case = planted_case(0.0)
    report.add_case("only", case["image"], case["segmentation"], case["cams"])
    report.write()
    assert "table class=\"structures\"" not in (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "table class=\"structures\"" not in (tmp_path / "cases" / "only.html").read_text(encoding="utf-8")
    assert SHAPE  # the planted grid
