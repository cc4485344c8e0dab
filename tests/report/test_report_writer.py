# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMReport on planted cases: statistics, Dice and flags in closed form, the stored volumes read back through
their affines, rows taking precedence, maps on other grids, the stated size, and bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from report_helpers import (
    AFFINE,
    DICE1,
    DICE2,
    INSIDE,
    OUTSIDE,
    PLANTED,
    SHAPE,
    as_meta,
    case_data,
    index_data,
    planted_case,
    ras_index,
    relevance,
    stored_volume,
)

from monai_segcam.report import DEFAULT_FLAG_THRESHOLD, SegCAMReport, cams_from_layers, report_size


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    report = SegCAMReport(folder, class_names={1: "organ", 2: "lesion"}, cam_max_size=16)
    for i, (name, outside) in enumerate(PLANTED.items()):
        case = planted_case(outside, seed=i)
        report.add_case(name, case["image"], case["segmentation"], case["cams"], label=case["label"])
    report.write()
    return folder, report


def _map(summary, layer, c):
    return next(m for m in summary["maps"] if m["layer"] == layer and m["class"] == c)


def test_statistics_dice_and_flags_in_closed_form(planted_report):
    folder, report = planted_report
    rows = {row["name"]: row for row in index_data(folder)["cases"]}
    assert list(rows) == list(PLANTED) and index_data(folder)["flag_threshold"] == DEFAULT_FLAG_THRESHOLD == 0.5
    for name, outside in PLANTED.items():
        summary = report.cases[name]
        assert summary["dice"] == {"1": pytest.approx(DICE1), "2": pytest.approx(DICE2)}
        pre_head = _map(summary, "pre_head", 1)
        assert pre_head["relevance_mass_region"] == pytest.approx(relevance(outside))
        assert pre_head["relevance_mass_label"] == pytest.approx(relevance(outside))  # INSIDE lies in the label too
        assert pre_head["pointing_game_label"] == (1.0 if outside < 1 else 0.0)  # the peak is OUTSIDE when > 1
        assert pre_head["region_voxels"] == 384 and pre_head["max"] == pytest.approx(max(1.0, outside), rel=1e-2)
        assert _map(summary, "bottleneck", 1)["relevance_mass_region"] == pytest.approx(1.0)
        assert _map(summary, "pre_head", 2)["relevance_mass_region"] == pytest.approx(1.0)
        flags = {(m["layer"], m["class"]): m["flagged"] for m in rows[name]["maps"]}
        assert flags == {("pre_head", 1): relevance(outside) < 0.5, ("bottleneck", 1): False,
                         ("pre_head", 2): False, ("bottleneck", 2): False}  # fmt: skip
        assert summary["classes"] == [
            {"index": 1, "name": "organ", "color": [0, 200, 255]},
            {"index": 2, "name": "lesion", "color": [255, 0, 255]},
        ]
    page = (folder / "cases" / "beta.html").read_text(encoding="utf-8")
    assert "⚑ 1 flagged map" in page and 'href="alpha.html" rel="prev"' in page and 'href="gamma.html"' in page


def test_stored_volumes_read_back_through_their_affines(planted_report):
    folder, _report = planted_report
    case = planted_case(PLANTED["beta"], seed=1)
    data = case_data(folder, "beta")
    assert data["shape"] == list(SHAPE) and data["spacing"] == pytest.approx([1.5, 1.5, 2.0])
    image = stored_volume(data, "image")
    assert image.shape == SHAPE and image.get_data_dtype() == np.uint8
    source = case["image"][0].numpy()
    low, high = np.percentile(source, (0.5, 99.5))
    slope = (high - low) / 255
    for index in [(0, 0, 0), (12, 9, 7), (31, 27, 19), (5, 20, 3)]:  # same world position, same value
        stored_index = (np.linalg.inv(image.affine) @ AFFINE @ np.array([*index, 1.0]))[:3]
        np.testing.assert_allclose(stored_index, ras_index(index), atol=1e-4)
        expected = np.clip(source[index], low, high)
        assert image.get_fdata()[ras_index(index)] == pytest.approx(expected, abs=slope / 2 + 1e-6)
    seg = stored_volume(data, "segmentation").get_fdata()
    np.testing.assert_array_equal(seg[ras_index((9, 9, 7))], 1.0)
    assert (seg == 1).sum() == 384 and (seg == 2).sum() == 64
    pre_head = next(m for m in data["maps"] if m["layer"] == "pre_head" and m["class"] == 1)
    source_peak = (SHAPE[0] - 1 - pre_head["peak"][0], SHAPE[1] - 1 - pre_head["peak"][1], pre_head["peak"][2])
    assert all(box.start <= i < box.stop for box, i in zip(OUTSIDE, source_peak))  # in the plateau of the maximum
    cam = stored_volume(data, pre_head["key"]).get_fdata()
    assert data["volumes"][pre_head["key"]]["shape"] == [16, 14, 10]  # CAMs on a coarser grid (cam_max_size=16)
    assert cam.sum() * 8 == pytest.approx(32 * 1.0 + 32 * 3.0, rel=0.02)  # block averages keep the mass


def test_rows_take_precedence_and_update_rows(tmp_path):
    case = planted_case(0.0)
    report = SegCAMReport(tmp_path, flag_threshold=0.3)
    rows = [
        {"case": "x", "layer": "pre_head", "method": "hirescam", "class": 1, "status": "ok",
         "relevance_mass_region": 0.2, "relevance_mass_label": "nan", "max": ""},
        {"case": "x", "layer": "bottleneck", "method": "hirescam", "class": 1, "status": "failed",
         "relevance_mass_region": 0.0},
    ]  # fmt: skip
    summary = report.add_case("x", case["image"], case["segmentation"], case["cams"], rows=rows, label=case["label"])
    pre_head, bottleneck = _map(summary, "pre_head", 1), _map(summary, "bottleneck", 1)
    assert pre_head["relevance_mass_region"] == 0.2 and pre_head["stats_from"] == "rows"
    assert pre_head["relevance_mass_label"] == pytest.approx(1.0) and pre_head["max"] == pytest.approx(1.0)  # kept
    assert bottleneck["relevance_mass_region"] == pytest.approx(1.0) and "stats_from" not in bottleneck
    report.update_rows([{**rows[0], "relevance_mass_region": 0.4}, {**rows[0], "case": "other", "class": 2}])
    report.write()
    flagged = {(m["layer"], m["class"]): m["flagged"] for m in index_data(tmp_path)["cases"][0]["maps"]}
    assert not flagged[("pre_head", 1)] and _map(report.cases["x"], "pre_head", 2)["relevance_mass_region"] == 1.0


def test_maps_on_other_grids_multi_label_and_plain_arrays(tmp_path):
    """A map on a finer, unflipped grid lands at its world position; plain arrays must be on the image's grid."""
    case = planted_case(0.0)
    fine = AFFINE @ np.diag([0.5, 0.5, 0.5, 1.0])
    fine[:3, 3] = AFFINE[:3, 3] - AFFINE[:3, :3] @ np.array([0.25, 0.25, 0.25])  # voxel faces kept
    peak = np.zeros(tuple(2 * s for s in SHAPE))
    peak[2 * 20 : 2 * 20 + 2, 2 * 5 : 2 * 5 + 2, 2 * 15 : 2 * 15 + 2] = 1.0  # voxel (20, 5, 15) of the image grid
    multi = np.zeros((2, *SHAPE))
    multi[0][INSIDE], multi[1][INSIDE] = 1, 1  # overlapping channels
    multi[1][OUTSIDE] = 1
    report = SegCAMReport(tmp_path, multi_label=True, max_size=64, cam_max_size=64)
    cams = {("fine", "gradcam", 0): as_meta(peak, fine), ("plain", "gradcam", 1): np.ones(SHAPE)}
    channels = MetaTensor(torch.as_tensor(multi, dtype=torch.float32), affine=torch.as_tensor(AFFINE))
    summary = report.add_case("m", case["image"], channels, cams)
    assert _map(summary, "fine", 0)["peak"] == list(ras_index((20, 5, 15)))
    assert _map(summary, "plain", 1)["relevance_mass_region"] == pytest.approx(64 / np.prod(SHAPE))
    assert _map(summary, "fine", 0)["relevance_mass_region"] == 0.0  # the peak lies outside channel 0's mask
    assert [c["index"] for c in summary["classes"]] == [0, 1]
    bits = stored_volume(case_data(tmp_path, "m"), "segmentation").get_fdata()
    assert bits[ras_index((11, 11, 8))] == 0b11 and bits[ras_index((25, 3, 2))] == 0b10
    with pytest.raises(ValueError, match="image's grid"):
        report.add_case("n", case["image"], cams={("a", "b", 1): np.ones((4, 4, 4))})
    with pytest.raises(ValueError, match="added already"):
        report.add_case("m", case["image"])


def test_size_is_stated_and_cams_from_layers(tmp_path):
    case = planted_case(1.0)
    maps = {"pre_head": torch.stack([case["cams"][("pre_head", "hirescam", c)][0] for c in (1, 2)])[None]}
    cams = cams_from_layers(maps, "hirescam", [1, 2])
    assert sorted(cams) == [("pre_head", "hirescam", 1), ("pre_head", "hirescam", 2)]
    with pytest.raises(ValueError, match="3 classes"):
        cams_from_layers(maps, "hirescam", [0, 1, 2])
    report = SegCAMReport(tmp_path)
    report.add_case("only", case["image"], case["segmentation"], cams)
    index = report.write()
    stated = int(re.search(r"\((\d+) bytes", Path(index).read_text(encoding="utf-8")).group(1))
    assert stated == report_size(tmp_path)  # the page's own bytes included
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == ["index.js", "report.css", "viewer.js"]
    with pytest.raises(ValueError, match="flag_threshold"):
        SegCAMReport(tmp_path, flag_threshold=2)


def test_an_all_zero_map_is_said_not_drawn(tmp_path):
    """A map that came back as exact zeros (e.g. float round-off) reads "zero map" in the case table; the viewer's
    legend says it too instead of a colour bar (viewer.js, camMax 0)."""
    case = planted_case(0.0)
    cams = {**case["cams"], ("pre_head", "gradcam", 1): as_meta(np.zeros(SHAPE))}
    report = SegCAMReport(tmp_path)
    summary = report.add_case("z", case["image"], case["segmentation"], cams, label=case["label"])
    report.write()
    assert _map(summary, "pre_head", 1)["max"] == pytest.approx(1.0)
    html = (tmp_path / "cases" / f"{summary['token']}.html").read_text()
    rows = re.findall(r"<tr data-map=[^>]*>.*?</tr>", html)
    zero = [row for row in rows if "zero map" in row]
    assert len(zero) == 1 and "<td>gradcam</td>" in zero[0]
    viewer = (tmp_path / "assets" / "viewer.js").read_text()
    assert "zero map (no relevance anywhere; nothing drawn)" in viewer
