# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""A review report from the files ``monai-segcam explain`` wrote (``--report``), read back from its output folder.

Per case folder ``OUTPUT/<case>/`` it reads ``<case>_segcam.json`` (the input and label paths, the files, each map's
class, layer, method and statistics), the input image (on its own grid), ``<case>_seg.nii.gz`` and the CAM NIfTI
files, and ``<case>_structures.csv`` when the command wrote it (the heatmaps of relevance per structure). The JSON's
statistics (:py:func:`~monai_segcam.metrics.cam_statistics`, as in the command's
``segcam_stats.csv``) are the report's; Dice is computed by the report from the label file given to the command.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from ..files.reading import read_image
from ..metrics.statistics import STAT_COLUMNS
from ..outputs import read_structures, summary_file_name
from .writer import SegCAMReport

__all__ = ["report_from_explain_output"]


def _rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for entry in summary["files"]:
        if entry.get("kind") != "cam":
            continue
        row = {"layer": entry["layer"], "method": entry["method"], "class": entry["class"], "status": "ok"}
        rows.append({**row, **{column: entry.get("stats", {}).get(column) for column in STAT_COLUMNS}})
    return rows


def report_from_explain_output(
    output_dir: str | os.PathLike,
    cases: Sequence[str] | None = None,
    report_dir: str | os.PathLike | None = None,
    **options: Any,
) -> str:
    """Write the review report of the cases in a ``monai-segcam explain`` output folder; returns ``index.html``'s path.

    Args:
        output_dir: the command's ``--output`` folder.
        cases: the case folders to report, in this order; default: every folder holding a ``<case>_segcam.json``.
        report_dir: the report folder; default ``output_dir/report``.
        options: further :py:class:`SegCAMReport` options (``flag_threshold``, ``max_size``...).

    Example:
        .. code-block:: python

            report_from_explain_output("cams/")  # cams/report/index.html
    """
    output_dir = os.fspath(output_dir)
    if cases is None:
        folders = sorted(os.listdir(output_dir))
        cases = [n for n in folders if os.path.isfile(os.path.join(output_dir, n, summary_file_name(n)))]
    summaries = []
    for name in cases:
        with open(os.path.join(output_dir, name, summary_file_name(name)), encoding="utf-8") as stream:
            summaries.append(json.load(stream))
    multi_label = any(bool(s.get("model", {}).get("multi_label")) for s in summaries)
    names = {int(c): n for s in summaries for c, n in s.get("classes", {}).items() if n}
    report = SegCAMReport(
        report_dir if report_dir is not None else os.path.join(output_dir, "report"),
        **{"class_names": names, "multi_label": multi_label, **options},
    )
    for summary in summaries:
        folder = os.path.join(output_dir, summary["case"])
        cams = {
            (entry["layer"], entry["method"], int(entry["class"])): read_image(os.path.join(folder, entry["file"]))
            for entry in summary["files"]
            if entry.get("kind") == "cam"
        }
        seg = read_image(os.path.join(folder, f"{summary['case']}_seg.nii.gz"))
        label = summary["input"].get("label")
        image = read_image(summary["input"]["path"])
        tables = [entry["file"] for entry in summary["files"] if entry.get("kind") == "structures"]
        structures = read_structures(os.path.join(folder, tables[0])) if tables else None
        report.add_case(summary["case"], image, seg, cams, rows=_rows(summary), label=read_image(label) if label else None,
                        structures=structures)  # fmt: skip
    return report.write()
