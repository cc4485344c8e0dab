# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The statistics table: one row per case, layer, method and class (:py:data:`CSV_COLUMNS`), ``mean``/``std``
summary rows, the CSV file written atomically, and a journal that keeps rows across a killed run."""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..metrics.statistics import STAT_COLUMNS, cam_statistics, label_masks
from ..perturbation.channels import CHANNEL_COLUMNS
from .files import atomic_output, safe_path
from .names import STATS_CSV
from .writer import write_text

__all__ = [
    "CSV_COLUMNS",
    "write_channel_table",
    "table_rows",
    "case_rows",
    "row_key",
    "merge_rows",
    "summary_rows",
    "read_table",
    "write_table",
    "StatsTable",
]

CSV_COLUMNS = ("case", "epoch", "layer", "method", "class", "status", "error", *STAT_COLUMNS, "files", "n")

Row = dict[str, Any]


def table_rows(
    case: str,
    method: str,
    layer: str,
    classes: Sequence[int | str],
    stats: Sequence[Mapping[str, Any]] | None = None,
    status: str = "ok",
    error: str = "",
    epoch: int | str = "",
    files: Mapping[tuple[str, Any], Sequence[str]] | None = None,
) -> list[Row]:
    """The rows of one case and layer, one per class: ``status`` is ``"ok"`` (with ``stats`` from
    :py:func:`~monai_segcam.metrics.cam_statistics`), ``"failed"`` (with ``error``) or ``"resumed"``.

    Example:
        .. code-block:: python

            rows = table_rows("case1", "hirescam", "pre_head", [1], cam_statistics(cam, region))
    """
    rows = []
    for j, c in enumerate(classes):
        row: Row = dict.fromkeys(CSV_COLUMNS, "")
        row.update(case=case, epoch=epoch, layer=layer, method=method, status=status, error=error)
        row["class"] = c
        row.update(stats[j] if stats is not None else {})
        row["files"] = ";".join((files or {}).get((layer, c), []))
        rows.append(row)
    return rows


def case_rows(
    case: str,
    method: str,
    maps: Mapping[str, Any],
    classes: Sequence[int],
    region: Any = None,
    label: Any = None,
    image: Any = None,
    epoch: int | str = "",
    files: Mapping[tuple[str, Any], Sequence[str]] | None = None,
) -> tuple[list[Row], str]:
    """The rows of one case, per layer and class, as every front door computes them: the
    :py:func:`~monai_segcam.metrics.cam_statistics` of each map ``(len(classes), *spatial)`` in the explained
    ``region`` and, when :py:func:`~monai_segcam.metrics.label_masks` accepts ``label`` on ``image``'s grid, in the
    label (else those columns stay empty).

    Returns:
        the rows, and why the label was not used (``""`` when it was).

    Example:
        .. code-block:: python

            rows, reason = case_rows("case1", "hirescam", {"pre_head": cam}, [1, 2], region, item["label"], image)
    """
    grid = image if image is not None else next(iter(maps.values()))
    truth, reason = label_masks(label, classes, grid)
    rows = []
    for layer, cam in maps.items():
        rows += table_rows(case, method, layer, classes, cam_statistics(cam, region, truth), epoch=epoch, files=files)
    return rows, reason


def row_key(row: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """``(case, layer, method, class)`` as strings: a row's identity in the table.

    Example:
        .. code-block:: python

            row_key({"case": "case1", "layer": "pre_head", "method": "hirescam", "class": 1})
    """
    return str(row["case"]), str(row["layer"]), str(row["method"]), str(row["class"])


def merge_rows(rows: Iterable[Row], previous: Mapping[tuple[str, str, str, str], Row] | None = None) -> list[Row]:
    """One row per :py:func:`row_key` (the first wins: duplicates from a sampler's padding are dropped), the
    ``"resumed"`` rows replaced by their ``previous`` version when it exists, sorted by key.

    Example:
        .. code-block:: python

            rows = merge_rows(gathered, previous=read_table("cams/segcam_stats.csv"))
    """
    unique: dict[tuple[str, str, str, str], Row] = {}
    for row in rows:
        unique.setdefault(row_key(row), row)
    for key, row in unique.items():
        if row["status"] == "resumed" and previous and key in previous:
            unique[key] = dict(previous[key])
    return [unique[key] for key in sorted(unique)]


def summary_rows(rows: Iterable[Row]) -> list[Row]:
    """``mean`` and ``std`` rows per (layer, method, class) over the rows with status ``ok`` (``n`` of them).

    Example:
        .. code-block:: python

            mean, std = summary_rows(rows)[:2]
    """
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault((str(row["layer"]), str(row["method"]), str(row["class"])), []).append(row)
    summary = []
    for (layer, method, class_index), members in sorted(groups.items()):
        for stat, reduce in (("mean", np.nanmean), ("std", np.nanstd)):
            line: Row = dict.fromkeys(CSV_COLUMNS, "")
            line.update(case=stat, layer=layer, method=method, status="summary", n=len(members))
            line["class"] = class_index
            for column in STAT_COLUMNS:
                values = np.array([_as_float(member[column]) for member in members], dtype=float)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-empty columns (no label) stay empty
                    line[column] = float(reduce(values))
            summary.append(line)
    return summary


def read_table(path: str | os.PathLike) -> dict[tuple[str, str, str, str], Row]:
    """The case rows of an existing CSV by :py:func:`row_key` (summary rows excluded); ``{}`` without a file.

    Example:
        .. code-block:: python

            previous = read_table("cams/segcam_stats.csv")
    """
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get("status") not in ("summary", None)]
    return {row_key(row): row for row in rows}


def write_table(path: str | os.PathLike, rows: Sequence[Row]) -> str:
    """Write ``rows`` and their :py:func:`summary_rows` as a CSV of :py:data:`CSV_COLUMNS`, atomically; values
    that do not exist (``nan``, e.g. label statistics without a usable label) are left empty.

    Example:
        .. code-block:: python

            write_table("cams/segcam_stats.csv", merge_rows(rows))
    """
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in [*rows, *summary_rows(rows)]:
        writer.writerow({key: "" if _missing(value) else value for key, value in row.items()})
    return write_text(stream.getvalue(), path)


class StatsTable:
    """The statistics CSV of a folder, kill-safe: finished rows are appended to hidden JSON-lines journals beside it
    (``.{csv_name}.epoch{E}.rank{R}.jsonl``, one per epoch and rank) until :py:meth:`write` writes the CSV and removes
    them, so a run killed before (even by ``SIGKILL``) loses no finished case: :py:meth:`recorded` gives a resumed
    run the rows of the CSV and of the journals. A journal line cut short by the kill is ignored.

    Example:
        .. code-block:: python

            table = StatsTable("cams", "segcam_stats.csv")
            table.append(rows, epoch=1, rank=0)  # as cases finish
            previous = table.recorded(epoch=1)  # after a restart
            table.write(merge_rows(rows, previous), epoch=1)
    """

    def __init__(self, folder: str | os.PathLike, csv_name: str = STATS_CSV) -> None:
        self.folder, self.csv_name = os.fspath(folder), csv_name

    @property
    def path(self) -> str:
        """The CSV file."""
        return safe_path(self.folder, self.csv_name)

    def journal(self, epoch: int, rank: int | str) -> str:
        """The journal of one epoch and rank."""
        return os.path.join(self.folder, f".{self.csv_name}.epoch{epoch}.rank{rank}.jsonl")

    def append(self, rows: Sequence[Row], epoch: int, rank: int) -> None:
        """Append finished ``rows`` to this rank's journal and flush them to disk."""
        if rows:
            os.makedirs(self.folder, exist_ok=True)
            with open(self.journal(epoch, rank), "a", encoding="utf-8") as stream:
                stream.write("".join(json.dumps(row) + "\n" for row in rows))
                stream.flush()
                os.fsync(stream.fileno())

    def recorded(self, epoch: int) -> dict[tuple[str, str, str, str], Row]:
        """The rows an earlier run recorded, by :py:func:`row_key`: the CSV's, then every rank's journal's."""
        rows = read_table(self.path)
        for path in self._journals(epoch):
            with open(path, encoding="utf-8") as stream:
                for line in stream:
                    try:
                        row = json.loads(line)
                        rows[row_key(row)] = row
                    except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                        continue
        return rows

    def write(self, rows: Sequence[Row], epoch: int) -> str:
        """Write the CSV (:py:func:`write_table`) and remove the journals of ``epoch``; returns its path."""
        path = write_table(self.path, rows)
        for journal in self._journals(epoch):
            os.unlink(journal)
        return path

    def _journals(self, epoch: int) -> list[str]:
        return sorted(glob.glob(glob.escape(self.journal(epoch, "")[: -len(".jsonl")]) + "*.jsonl"))


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def write_channel_table(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write channel-importance rows (e.g. :py:meth:`ChannelAttributionResult.rows`) as a CSV, atomically.

    The columns are :py:data:`CHANNEL_COLUMNS`; a row missing a column leaves it empty, extra keys are ignored.
    The file is written to a temporary file beside ``path`` and moved over it
    (:py:func:`~monai_segcam.outputs.atomic_output`).

    Example:
        .. code-block:: python

            write_channel_table(result.rows(["case1"], ["T1", "FLAIR"]), "out/channels.csv")
    """
    path = os.fspath(path)
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=CHANNEL_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**dict.fromkeys(CHANNEL_COLUMNS, ""), **row})
    return path
