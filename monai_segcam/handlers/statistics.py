# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The statistics handler: one CSV row per case, layer and class (:py:func:`~monai_segcam.metrics.cam_statistics`),
gathered across ranks and written once per epoch; label statistics are optional and never fatal. The cases'
structure tables (written by the saver) are gathered the same way into the data set's ``segcam_structures.csv``."""

from __future__ import annotations

import os
from typing import Any

from ..outputs import (
    STATS_CSV,
    STRUCTURES_CSV,
    StatsTable,
    case_rows,
    cohort_structure_rows,
    epoch_folder,
    merge_rows,
    read_structures,
    structures_file_name,
    table_rows,
    write_cohort_structures,
)
from .compute import CAMCase, Engine, Events, SegCAMComputeHandler, gather, idist

__all__ = ["SegCAMStatsHandler"]


class SegCAMStatsHandler:
    """Record each case's rows (:py:func:`~monai_segcam.outputs.case_rows`) at ``ITERATION_COMPLETED``, after the
    saver, and write the CSV (:py:class:`~monai_segcam.outputs.StatsTable`) at ``EPOCH_COMPLETED`` on ``save_rank``,
    the rows of every rank gathered (a sampler's padding dropped). A label the statistics cannot use leaves its
    columns empty, and the handler says once why. :py:meth:`recorded` tells a resumed run which cases are done.
    When the saver wrote structure tables (``structures``), their rows are gathered too and
    ``segcam_structures.csv`` (mean and spread per layer, method, class and structure,
    :py:func:`~monai_segcam.outputs.cohort_structure_rows`) is written beside the CSV; a resumed case's table is
    read back from its ``<case>_structures.csv``.

    Args:
        compute: the :py:class:`~monai_segcam.handlers.SegCAMComputeHandler` whose cases are recorded (its method,
            layer keys, classes, interval and logger are used).
        output_dir, csv_name, epoch_subdir, save_rank: as for :py:class:`~monai_segcam.handlers.SegCAMHandler`
            (``output_dir=None``: rows in :py:attr:`rows` only).

    Example:
        .. code-block:: python

            compute = SegCAMComputeHandler(classes=[1, 2], label_key="label")
            stats = SegCAMStatsHandler(compute, output_dir="cams")  # cams/segcam_stats.csv, no maps written
            compute.attach(evaluator)
            stats.attach(evaluator)
    """

    def __init__(
        self,
        compute: SegCAMComputeHandler,
        output_dir: str | os.PathLike | None = None,
        csv_name: str | None = STATS_CSV,
        epoch_subdir: bool = False,
        save_rank: int = 0,
    ) -> None:
        self.compute = compute
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.csv_name = csv_name if self.output_dir is not None else None
        self.epoch_subdir, self.save_rank = epoch_subdir, save_rank
        self.rows: list[dict[str, Any]] = []
        self.structure_rows: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}
        self._previous: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._said_label = False

    def attach(self, engine: Engine) -> None:
        """Register the handler's events on ``engine``."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def started(self, engine: Engine) -> None:
        """``STARTED``: check ``save_rank``."""
        world = idist.get_world_size()
        if not 0 <= self.save_rank < world:
            raise ValueError(f"save_rank {self.save_rank} is not a rank of this run (world size {world}).")

    def epoch_started(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: forget the previous epoch's rows; read what an earlier run recorded (CSV, journals)."""
        table = self._table(engine)
        self.rows, self.failed, self.structure_rows = [], {}, []
        self._previous = table.recorded(engine.state.epoch) if table is not None else {}

    def recorded(self, name: str, engine: Engine) -> bool:
        """Whether an earlier run recorded every row of case ``name`` with status ``ok`` (for ``resume``)."""
        if self.csv_name is None:
            return True
        compute = self.compute
        keys = [(name, layer, compute.method, str(c)) for layer in compute.layers for c in compute.classes]
        return all(self._previous.get(key, {}).get("status") == "ok" for key in keys)

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: the rows of the batch's cases."""
        rows = []
        for case in self.compute.cases(engine):
            if case.status == "failed":
                self.failed[case.name] = case.error
            rows += self._case_rows(case)
            self.structure_rows += [{"case": case.name, **row} for row in self._case_structures(case, engine)]
        self.rows += rows
        table = self._table(engine)
        if table is not None:
            table.append([row for row in rows if row["status"] == "ok"], engine.state.epoch, idist.get_rank())

    def epoch_completed(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: gather the rows to ``save_rank`` and write the CSV there."""
        if self.compute.epoch_level and engine.state.epoch % self.compute.interval:
            return
        gathered, structures = gather(self.rows), gather(self.structure_rows)
        if idist.get_rank() != self.save_rank:
            return
        self._write_structures(structures, engine)
        self.rows = merge_rows(gathered, self._previous)
        failed = sorted({f"{row['case']}: {row['error']}" for row in self.rows if row["status"] == "failed"})
        if failed:
            self.compute.logger.warning(f"SegCAMHandler: {len(failed)} case(s) failed: " + "; ".join(failed))
        table = self._table(engine)
        if table is not None:
            table.write(self.rows, engine.state.epoch)

    def _table(self, engine: Engine) -> StatsTable | None:
        if self.output_dir is None or self.csv_name is None:
            return None
        return StatsTable(epoch_folder(self.output_dir, engine.state.epoch, self.epoch_subdir), self.csv_name)

    def _case_structures(self, case: CAMCase, engine: Engine) -> list[dict[str, Any]]:
        """The case's structure rows: the saver's, or those of a resumed case's table on disk."""
        if case.status == "resumed" and self.output_dir is not None:
            path = os.path.join(epoch_folder(self.output_dir, engine.state.epoch, self.epoch_subdir),
                                structures_file_name(case.name))  # fmt: skip
            return read_structures(path) if os.path.isfile(path) else []
        return case.structure_rows if case.status == "ok" else []

    def _write_structures(self, gathered: list[dict[str, Any]], engine: Engine) -> None:
        """``segcam_structures.csv`` of every rank's structure rows (a sampler's padding dropped)."""
        unique: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in gathered:
            key = tuple(str(row[k]) for k in ("case", "layer", "method", "class", "structure"))
            unique.setdefault(key, row)
        self.structure_rows = list(unique.values())
        if self.output_dir is not None and self.structure_rows:
            folder = epoch_folder(self.output_dir, engine.state.epoch, self.epoch_subdir)
            write_cohort_structures(os.path.join(folder, STRUCTURES_CSV), cohort_structure_rows(self.structure_rows))

    def _case_rows(self, case: CAMCase) -> list[dict[str, Any]]:
        method, classes = self.compute.method, case.classes or self.compute.classes
        if case.status != "ok":
            state = (None, case.status, case.error, case.epoch)
            return [row for layer in self.compute.layers for row in table_rows(case.name, method, layer, classes, *state)]
        rows, reason = case_rows(case.name, method, case.cams, classes, case.region, case.label, case.image,
                                 case.epoch, case.files)  # fmt: skip
        if reason and not self._said_label:  # once per run, not per case
            self._said_label = True
            log = self.compute.logger.info if case.label is None else self.compute.logger.warning
            log(f"SegCAMHandler: label statistics left empty: {reason} (first seen in case {case.name!r}).")
        return rows
