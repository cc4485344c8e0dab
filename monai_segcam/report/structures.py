# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The report's answers per structure: a heatmap table of each map's ``share`` of positive relevance per structure
(:py:func:`~monai_segcam.outputs.structure_rows`), on a case page and, averaged over the cases, on the index page."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

from ..outputs import cohort_structure_rows

__all__ = ["structure_heatmap", "cohort_heatmap"]


def _cell(share: float, tip: str) -> str:
    """A cell coloured by its share (white 0 to dark red 1), its share as a percentage, ``tip`` as its tooltip."""
    alpha = max(0.0, min(1.0, float(share)))
    colour = "#fff" if alpha > 0.55 else "#1d1d1f"
    return (f'<td class="heat" data-share="{share:.6f}" title="{escape(tip)}" '
            f'style="background: rgba(192, 57, 43, {alpha:.3f}); color: {colour}">{100 * share:.1f}%</td>')  # fmt: skip


def _table(rows: Sequence[Mapping[str, Any]], share: str, tip: Callable[[Mapping[str, Any]], str],
           class_names: Mapping[int, str], title: str) -> str:  # fmt: skip
    structures = list(dict.fromkeys(str(row["structure"]) for row in rows))
    maps = list(dict.fromkeys((str(row["layer"]), str(row["method"]), str(row["class"])) for row in rows))
    cells = {(str(r["layer"]), str(r["method"]), str(r["class"]), str(r["structure"])): r for r in rows}
    head = "".join(f"<th>{escape(s)}</th>" for s in structures)
    body = []
    for layer, method, c in maps:
        name = class_names.get(int(c)) if c.lstrip("-").isdigit() else None
        label = f"{layer} · {method} · class {c}" + (f" ({name})" if name else "")
        tds = []
        for s in structures:
            row = cells.get((layer, method, c, s))
            tds.append("<td>–</td>" if row is None else _cell(float(row[share]), tip(row)))
        body.append(f'<tr><th class="name">{escape(label)}</th>{"".join(tds)}</tr>')
    return (f'<table class="structures"><caption>{escape(title)}</caption><thead><tr><th class="name">map</th>'
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")  # fmt: skip


def structure_heatmap(rows: Sequence[Mapping[str, Any]], class_names: Mapping[int, str] | None = None) -> str:
    """The HTML heatmap of one case's structure rows (``layer``, ``method``, ``class``, ``structure``, ``share``,
    ``density``): one row per map, one column per structure, each cell the map's share of positive relevance in the
    structure (its density in the tooltip); ``""`` without rows.

    Example:
        .. code-block:: python

            html = structure_heatmap(read_structures("cams/case1/case1_structures.csv"), {1: "spleen"})
    """
    if not rows:
        return ""
    title = "Share of each map's positive relevance per structure (hover: mean relevance per voxel)"
    def tip(row: Mapping[str, Any]) -> str:
        return f"share {float(row['share']):.4f}, density {float(row['density']):.4g}"

    return _table(rows, "share", tip, dict(class_names or {}), title)


def cohort_heatmap(cases: Mapping[str, Sequence[Mapping[str, Any]]], class_names: Mapping[int, str] | None = None) -> str:
    """The HTML heatmap of the mean share per map and structure over the cases (``{case: its structure rows}``,
    :py:func:`~monai_segcam.outputs.cohort_structure_rows`); ``""`` when no case has rows.

    Example:
        .. code-block:: python

            html = cohort_heatmap({name: summary["structures"] for name, summary in report.cases.items()})
    """
    rows = [{"case": name, **row} for name, case_rows in cases.items() for row in case_rows]
    if not rows:
        return ""
    n = len({name for name, case_rows in cases.items() if case_rows})
    title = f"Mean share of positive relevance per structure over {n} case{'s' if n != 1 else ''} (hover: spread)"
    def tip(row: Mapping[str, Any]) -> str:
        share = f"share {row['share_mean']:.4f} ± {row['share_std']:.4f}"
        return f"{share}, density {row['density_mean']:.4g} ± {row['density_std']:.4g}, over {row['n']} case(s)"

    return _table(cohort_structure_rows(rows), "share_mean", tip, dict(class_names or {}), title)
