# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The report in a real headless browser (Debian's Chromium driven by Playwright), opened from ``file://``: the
table sorts, filters and flags as the planted statistics say; a flagged case's viewer draws the overlays, and moving
a slice slider or switching the layer changes what is drawn (checked on screenshots); no console errors."""

from __future__ import annotations

import numpy as np
import pytest
from report_helpers import (
    PLANTED,
    Browser,
    case_data,
    changed_fraction,
    colourful_fraction,
    planted_case,
    relevance,
    screenshot,
    settle,
    stored_volume,
)

from monai_segcam.report import SegCAMReport


@pytest.fixture(scope="module")
def browser():
    browser = Browser()
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    report = SegCAMReport(folder, class_names={1: "organ", 2: "lesion"})
    for i, (name, outside) in enumerate(PLANTED.items()):
        case = planted_case(outside, seed=i)
        report.add_case(name, case["image"], case["segmentation"], case["cams"], label=case["label"])
    report.write()
    return folder


def _names(page) -> list[str]:
    return page.eval_on_selector_all("#cases tbody tr", "rows => rows.map(r => r.dataset.case)")


def test_index_sorts_filters_and_flags(browser, report_dir):
    browser.errors.clear()
    page = browser.open(report_dir / "index.html")
    by_relevance = sorted(PLANTED, key=lambda name: relevance(PLANTED[name]))
    assert _names(page) == by_relevance  # worst first: the other maps lie inside their regions (relevance 1)
    assert "report size" in page.inner_text(".summary")
    page.click("th[data-key='name']")
    assert _names(page) == sorted(PLANTED)
    page.click("th[data-key='relevance_mass_region']")
    assert _names(page) == by_relevance
    page.click("th[data-key='relevance_mass_region']")
    assert _names(page) == by_relevance[::-1]
    flagged = {name for name, outside in PLANTED.items() if relevance(outside) < 0.5}
    assert flagged == {"beta", "delta"}
    assert set(page.eval_on_selector_all("#cases tr.flagged", "rows => rows.map(r => r.dataset.case)")) == flagged
    page.check("#flagged-only")
    assert set(_names(page)) == flagged
    page.fill("#threshold", "0.7")  # gamma (0.667) is flagged too
    assert set(_names(page)) == flagged | {"gamma"}
    page.uncheck("#flagged-only")
    page.fill("#filter", "lt")
    assert _names(page) == ["delta"]
    page.check("#flagged-only")
    page.select_option("#map", label="bottleneck · hirescam · class 1")  # its map lies inside: nothing flagged
    assert _names(page) == [] and "0 of 4" in page.inner_text("#shown")
    assert browser.errors == []
    page.close()


def test_flagged_case_viewer_draws_and_follows_the_controls(browser, report_dir):
    browser.errors.clear()
    page = browser.open(report_dir / "index.html")
    page.check("#flagged-only")
    page.click("th[data-key='relevance_mass_region']")  # the worst case first
    page.click("#cases tbody tr:first-child td.name a")
    page.wait_for_selector("#viewer[data-rendered]")
    assert page.inner_text("h1").startswith("beta")
    assert page.input_value("#layer") == "pre_head" and page.input_value("#class") == "1"

    axial, coronal = page.locator("#canvas-axial"), page.locator("#canvas-coronal")
    settle(page, lambda: page.fill("#slice-axial", "9"))  # through the organ and the map's part inside it
    start = screenshot(axial)
    settle(page, lambda: page.uncheck("#cam-on"))
    no_cam = screenshot(axial)
    assert changed_fraction(start, no_cam) > 0.003  # the CAM overlay is drawn (a 4 x 4 voxel block)
    settle(page, lambda: page.select_option("#seg-mode", "off"))
    settle(page, lambda: page.select_option("#label-mode", "off"))
    assert colourful_fraction(screenshot(axial)) < colourful_fraction(no_cam) - 0.01  # outlines were drawn
    settle(page, lambda: page.check("#cam-on"))
    settle(page, lambda: page.select_option("#seg-mode", "outline"))
    settle(page, lambda: page.select_option("#label-mode", "dotted"))
    assert changed_fraction(screenshot(axial), start) == 0  # back to the first picture
    coronal_before = screenshot(coronal)
    settle(page, lambda: page.click("#peak"))  # the map's maximum lies outside the organ, slices 2-3
    assert page.input_value("#slice-axial") in ("2", "3")
    assert changed_fraction(screenshot(axial), start) > 0.01
    assert changed_fraction(screenshot(coronal), coronal_before) > 0  # the crosshair follows in the other planes
    settle(page, lambda: page.fill("#slice-axial", "9"))
    moved = screenshot(axial)
    settle(page, lambda: page.select_option("#layer", "bottleneck"))
    switched = screenshot(axial)
    assert changed_fraction(switched, moved) > 0.01  # the bottleneck map covers the whole organ
    assert "bottleneck" in page.inner_text(".legend") and "organ" in page.inner_text(".legend")
    settle(page, lambda: page.click("table.maps tbody tr:nth-child(3)"))  # a click on a statistics row shows its map
    assert page.input_value("#class") == "2" and page.input_value("#layer") == "pre_head"
    info = page.inner_text(".info")
    settle(page, lambda: page.click("#canvas-axial", position={"x": 5, "y": 5}))
    assert page.inner_text(".info") != info
    window = screenshot(axial)
    settle(page, lambda: page.fill("#width", str(float(page.get_attribute("#width", "min")) * 10)))
    assert changed_fraction(screenshot(axial), window) > 0.05  # a narrow intensity window
    assert browser.errors == []
    page.close()


def test_multi_label_legend_and_no_label(browser, tmp_path):
    """A multi-label case without ground truth: one legend entry per channel, overlapping outlines, no errors."""
    case = planted_case(0.0)
    channels = np.stack([case["segmentation"][0].numpy() == 1, case["segmentation"][0].numpy() > 0])
    segmentation = case["segmentation"].new_tensor(channels.astype(np.float32))
    report = SegCAMReport(tmp_path, multi_label=True, class_names=["organ", "organ or lesion"])
    cams = {("pre_head", "hirescam", 0): case["cams"][("pre_head", "hirescam", 1)]}
    report.add_case("multi", case["image"], segmentation, cams)
    report.write()
    browser.errors.clear()
    page = browser.open(tmp_path / "cases" / "multi.html")
    page.wait_for_selector("#viewer[data-rendered]")
    legend = page.inner_text(".legend")
    assert "0 organ" in legend and "1 organ or lesion" in legend and "label" not in page.inner_text(".controls")
    assert colourful_fraction(screenshot(page.locator("#canvas-axial"))) > 0.01
    assert browser.errors == []
    page.close()


def _flag_cells(page) -> dict[str, str]:
    return dict(page.eval_on_selector_all(
        "#cases tbody tr", "rows => rows.map(r => [r.dataset.case, r.querySelector(\"td[data-key='flag']\").innerText])"
    ))  # fmt: skip


def test_flag_column_names_the_flagged_maps_whatever_the_selector_shows(browser, tmp_path):
    """The flagged map (pre_head, class 1) is not the first map, which a statistics selector used to default to: the
    flag column still names it in every case where it is flagged, and keeps doing so when the selector changes."""
    report = SegCAMReport(tmp_path, class_names={1: "organ", 2: "lesion"})
    for i, (name, outside) in enumerate(PLANTED.items()):
        case = planted_case(outside, seed=i)
        cams = dict(sorted(case["cams"].items()))  # bottleneck maps first
        assert next(iter(cams)) == ("bottleneck", "hirescam", 1)
        report.add_case(name, case["image"], case["segmentation"], cams, label=case["label"])
    report.write()
    browser.errors.clear()
    page = browser.open(tmp_path / "index.html")
    flagged_map = "⚑ pre_head · hirescam · class 1"
    expected = {name: flagged_map if relevance(outside) < 0.5 else "" for name, outside in PLANTED.items()}
    assert _flag_cells(page) == expected
    assert set(page.eval_on_selector_all("#cases tr.flagged", "rows => rows.map(r => r.dataset.case)")) == {"beta", "delta"}
    shown = page.eval_on_selector_all("#cases tbody td[data-key='map']", "cells => cells.map(c => c.innerText)")
    assert set(shown) == {"pre_head · hirescam · class 1", "bottleneck · hirescam · class 1"}  # each case's worst map
    page.select_option("#map", label="bottleneck · hirescam · class 1")  # the selector refines the statistics only
    assert _flag_cells(page) == expected
    assert page.eval_on_selector_all("#cases td.flagged-map", "cells => cells.length") == 0
    page.check("#flagged-only")
    assert _names(page) == []
    page.select_option("#map", label="pre_head · hirescam · class 1")
    assert set(_names(page)) == {"beta", "delta"}
    assert page.eval_on_selector_all("#cases td.flagged-map", "cells => cells.length") == 2
    page.uncheck("#flagged-only")
    page.fill("#threshold", "0.1")  # nothing is below 0.1: the column empties
    assert set(_flag_cells(page).values()) == {""}
    page.fill("#threshold", "0.5")
    page.click("th[data-key='flag']")  # the default order (worst first) reversed
    assert _names(page) == sorted(PLANTED, key=lambda name: relevance(PLANTED[name]))[::-1]
    assert browser.errors == []
    page.close()


def _legend_numbers(page) -> tuple[float, str]:
    return float(page.inner_text("#colorbar-max")), page.inner_text(".legend")


@pytest.mark.parametrize("cam_max_size", [None, 8])
def test_colour_bar_agrees_with_the_table_or_says_why(browser, tmp_path, cam_max_size):
    """The colour bar ends at the maximum of the map as shown (decoded from the case's data like the browser does);
    the table's max is the full-resolution map's. Without downsampling they are one number; with it (8 voxels a
    side: the 4 x 4 x 2 block of value 3 is averaged down) the legend says the map is downsampled and names the
    table's maximum."""
    case = planted_case(3.0)
    report = SegCAMReport(tmp_path, cam_max_size=cam_max_size)
    report.add_case("beta", case["image"], case["segmentation"], case["cams"], label=case["label"])
    report.write()
    browser.errors.clear()
    page = browser.open(tmp_path / "cases" / "beta.html")
    page.wait_for_selector("#viewer[data-rendered]")
    key = page.get_attribute("table.maps tbody tr.selected", "data-map")
    table_max = float(page.inner_text(f"table.maps tbody tr[data-map='{key}'] td:nth-child(4)"))
    assert page.inner_text("table.maps thead th:nth-child(4)") == "max (full resolution)"
    assert table_max == 3.0  # the planted maximum (pre_head, class 1: 3 outside the organ)
    stored = stored_volume(case_data(tmp_path, "beta"), key)
    shown_max = float(np.asarray(stored.dataobj).max()) if stored.header.get_slope_inter()[0] is None else float(
        stored.get_fdata().max())
    bar_max, legend = _legend_numbers(page)
    assert bar_max == pytest.approx(shown_max, rel=5e-3)  # the viewer prints 3 significant digits
    if cam_max_size is None:
        assert shown_max == pytest.approx(table_max, rel=1e-6) and "downsampled" not in legend
    else:
        assert shown_max < 0.8 * table_max  # the block is averaged away: a colour bar to 3 would be a lie
        assert "downsampled to 8×7×5 voxels from 32×28×20" in legend
        assert "full-resolution maximum 3" in legend and "(the table's max)" in legend
    assert browser.errors == []
    page.close()
