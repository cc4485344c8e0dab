# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The HTML of a review report: the index page and the case pages (their scripts are in ``assets/``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

from .stats import finite_or_none, is_flagged
from .structures import structure_heatmap

__all__ = ["index_page", "case_page", "epochs_page", "format_size"]

_STAT_HEADERS = (
    ("max", "max (full resolution)"),
    ("region_voxels", "region voxels"),
    ("relevance_mass_region", "relevance mass in region"),
    ("relevance_mass_label", "relevance mass in label"),
    ("pointing_game_label", "pointing game (label)"),
)


def format_size(size: int) -> str:
    """``size`` bytes for people: ``"812 kB"``, ``"3.4 MB"``.

    Example:
        >>> format_size(3_400_000)
        '3.4 MB'
    """
    if size < 1_000_000:
        return f"{max(1, round(size / 1000))} kB"
    return f"{size / 1_000_000:.1f} MB"


def _script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element."""
    return json.dumps(data).replace("</", "<\\/")


def _page(title: str, body: str, root: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<title>{escape(title)}</title>\n<link rel="stylesheet" href="{root}assets/report.css">\n</head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def index_page(title: str, index: Mapping[str, Any], size: int, structures: str = "") -> str:
    """The index page: the table is built by ``assets/index.js`` from the embedded ``index`` data; ``structures``:
    the cohort's heatmap of relevance per structure (:py:func:`~monai_segcam.report.structures.cohort_heatmap`).

    Example:
        .. code-block:: python

            html = index_page("Seg-CAM review report", {"flag_threshold": 0.5, "cases": rows}, size=812_000)
    """
    cases = len(index["cases"])
    body = (
        f"<h1>{escape(title)}</h1>\n"
        f"<p class=\"summary\">{cases} case{'s' if cases != 1 else ''} · report size <span id=\"report-size\">"
        f"{format_size(size)}</span> ({size} bytes, all files of this folder) · a case is flagged when a map's "
        "relevance mass in the explained region (the share of its positive mass inside what was segmented) is "
        "below the threshold.</p>\n"
        "<div id=\"controls\"></div>\n<table id=\"cases\"></table>\n"
        + (f'<h2>Relevance per structure</h2>\n{structures}\n' if structures else "")
        +         f"<script>window.SEGCAM_INDEX = {_script_json(index)};</script>\n"
        "<script src=\"assets/index.js\"></script>"
    )
    return _page(title, body, "")


def _number(value: Any, digits: int = 3) -> str:
    number = finite_or_none(value)
    if number is None:
        return "–"
    return f"{number:.0f}" if abs(number) >= 100 or float(number).is_integer() else f"{number:.{digits}g}"


def _class_name(c: int, names: Mapping[int, str]) -> str:
    return f"{c} ({escape(names[c])})" if c in names else str(c)


def case_page(
    summary: Mapping[str, Any],
    threshold: float,
    class_names: Mapping[int, str],
    previous: str | None = None,
    following: str | None = None,
) -> str:
    """A case page: navigation, Dice, the statistics of every map (flagged rows marked; a click shows the map) and
    the viewer, which ``assets/viewer.js`` builds from ``<token>.js``.

    Example:
        .. code-block:: python

            html = case_page(report.cases["image000"], 0.5, {1: "liver"}, previous=None, following="image001")
    """
    flagged = [entry for entry in summary["maps"] if is_flagged(entry, threshold)]
    links = ['<a href="../index.html">all cases</a>']
    links += [f"<a href=\"{escape(t)}.html\" rel=\"{r}\">{label}</a>" for t, r, label in (
        (previous, "prev", "‹ previous"), (following, "next", "next ›")) if t]  # fmt: skip
    badge = f" <span class=\"flag\">⚑ {len(flagged)} flagged map{'s' if len(flagged) != 1 else ''}</span>"
    dice = " · ".join(f"class {_class_name(int(c), class_names)}: {_number(v)}" for c, v in summary["dice"].items())
    header = "".join(f"<th>{escape(h)}</th>" for h in ("layer", "method", "class", *(h for _, h in _STAT_HEADERS)))
    rows = []
    for entry in summary["maps"]:
        mark = ' class="flagged"' if entry in flagged else ""
        cells = [escape(entry["layer"]), escape(entry["method"]), _class_name(entry["class"], class_names)]
        cells += [_number(entry.get(key)) for key, _ in _STAT_HEADERS]
        if entry.get("max") == 0:  # an all-zero map (e.g. float round-off returned as zeros) is said, not drawn
            cells[3] = '0 <span class="zero">zero map</span>'
        rows.append(f"<tr data-map=\"{entry['key']}\"{mark}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    body = (
        f"<nav>{' · '.join(links)}</nav>\n<h1>{escape(summary['name'])}{badge if flagged else ''}</h1>\n"
        + (f'<p class="summary">Dice: {dice}</p>\n' if dice else "")
        + '<div id="viewer"></div>\n'
        + f"<table class=\"maps\"><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>\n"
        + structure_heatmap(summary.get("structures", []), class_names)
        + f'<p class="note">Flagged (⚑): relevance mass in the explained region below {threshold:g}. Click a row '
        "to show its map. Statistics from the handler's rows where given, else computed on this report's grid with "
        "the segmented class as the region; max is that of the map at full resolution. The viewer shows each map "
        "downsampled (the report stays small): its colour bar ends at the shown map's maximum and names the "
        "full-resolution one when they differ.</p>\n"
        + '<script src="../assets/viewer.js"></script>\n'
        + f"<script src=\"{escape(summary['token'])}.js\"></script>\n"
        + '<script>SegCAMViewer.start(document.getElementById("viewer"), window.SEGCAM_CASE);</script>'
    )
    return _page(f"{summary['name']} · Seg-CAM report", body, "../")


def epochs_page(title: str, epochs: list[tuple[str, int, int]]) -> str:
    """A page linking the reports of several epochs: ``(folder, number of cases, flagged cases)`` each.

    Example:
        .. code-block:: python

            html = epochs_page("Seg-CAM review report: epochs", [("epoch_0001", 2, 1), ("epoch_0002", 2, 0)])
    """
    items = "".join(
        f'<li><a href="{escape(folder)}/index.html">{escape(folder)}</a>: {n} cases, {flagged} flagged</li>'
        for folder, n, flagged in epochs
    )
    root = f"{epochs[0][0]}/" if epochs else ""  # the style sheet of an epoch's report
    return _page(title, f'<h1>{escape(title)}</h1>\n<ul class="epochs">{items}</ul>', root)
