# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""An Ignite handler writing a browser review report of the cases an evaluator explained."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor

from ..outputs import CaseNamer, epoch_folder
from ..report import SegCAMReport, cams_from_layers
from ..report.stats import DEFAULT_FLAG_THRESHOLD
from ..report.writer import write_epochs_index
from .compute import Engine, Events, SegCAMComputeHandler, gather, idist, output_item
from .segcam_handler import SegCAMHandler

__all__ = ["SegCAMReportHandler"]


class SegCAMReportHandler:
    """Collect the explained cases of an evaluator and write a review report (:py:class:`~monai_segcam.report.
    SegCAMReport`) at ``EPOCH_COMPLETED``.

    At ``ITERATION_COMPLETED`` (after the engine's postprocessing) it reads, per case of ``engine.state.output``,
    the image, the prediction, the label when there is one and the CAM keys that :py:class:`SegCAMHandler` writes
    (``cam`` for one layer, ``cam_<layer>`` for several); cases without CAM keys (not selected) are left out. The
    volumes may lie on different grids (e.g. the network input and, after ``Invertd``, the original image grid):
    the report places them through their affines, on the image's grid. With ``segcam_handler`` its layers, method,
    classes, keys and multi-label setting are used, its cases are named as its CSV names them, and its statistics rows
    (:py:attr:`SegCAMHandler.rows`) fill the report's table; attach this handler *after* it (later in
    ``val_handlers``). Without it, the same settings object is built from ``settings``, and cases are named after
    their source files (:py:class:`~monai_segcam.outputs.CaseNamer`).

    Under ``torch.distributed`` each rank stores its own cases and ``save_rank`` writes the pages of all of them,
    in the order of their names (in one process: in the order of the data).

    Args:
        output_dir: the report folder (``index.html`` inside); with ``epoch_subdir`` one report per epoch in
            ``output_dir/epoch_NNNN/`` and an ``index.html`` listing them.
        segcam_handler: the :py:class:`SegCAMHandler` (or :py:class:`SegCAMComputeHandler`: no rows) whose CAMs are
            reported.
        image_key: the output key of the image.
        pred_key: the output key of the prediction (a label map, one-hot or scores); ``None``: no segmentation.
        label_key: the output key of the ground truth; ``None`` or missing: no Dice.
        epoch_subdir: one report per epoch (for a trainer's validation).
        flag_threshold: the default flag threshold on relevance mass in the explained region.
        max_size: the largest side of the stored volumes, in voxels.
        class_names: names of the classes by index.
        title: the index page's title.
        save_rank: the rank that writes the pages.
        name: the logger name.
        settings: without ``segcam_handler``: ``layers``, ``method``, ``classes``, ``multi_label`` and ``cam_key`` of
            the reported CAMs, as for :py:class:`SegCAMComputeHandler`.

    Example:
        .. code-block:: python

            cams = SegCAMHandler(layers=["bottleneck", "pre_head"], classes=[1, 2], output_dir="eval")
            evaluator = SupervisedEvaluator(..., val_handlers=[cams, SegCAMReportHandler("eval/report", cams)])
            evaluator.run()  # eval/report/index.html
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        segcam_handler: SegCAMComputeHandler | None = None,
        image_key: str = "image",
        pred_key: str | None = "pred",
        label_key: str | None = "label",
        epoch_subdir: bool = False,
        flag_threshold: float = DEFAULT_FLAG_THRESHOLD,
        max_size: int = 96,
        class_names: Mapping[int, str] | Sequence[str] | None = None,
        title: str = "Seg-CAM review report",
        save_rank: int = 0,
        name: str | None = None,
        **settings: Any,
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.segcam_handler = segcam_handler
        unknown = sorted(set(settings) - {"layers", "method", "classes", "multi_label", "cam_key"})
        if unknown:
            raise TypeError(f"SegCAMReportHandler got unexpected keyword arguments {unknown}")
        # the settings of the reported CAMs: the handler's, or the same object (not attached) built from `settings`
        self.cams = segcam_handler or SegCAMComputeHandler(**settings)
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.epoch_subdir = epoch_subdir
        self.title, self.flag_threshold, self.max_size, self.class_names = title, flag_threshold, max_size, class_names
        self.new_report(self.output_dir)  # checks the options now
        self.save_rank = save_rank
        self.logger = logging.getLogger(name or __name__)
        self.report: SegCAMReport | None = None
        self.written: list[str] = []
        self._names = CaseNamer()

    def attach(self, engine: Engine) -> None:
        """Register the handler's events on ``engine``.

        Example:
            .. code-block:: python

                SegCAMReportHandler("report", cam_handler).attach(evaluator)
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def new_report(self, folder: str) -> SegCAMReport:
        """An empty report in ``folder`` with this handler's options."""
        return SegCAMReport(folder, self.title, self.flag_threshold, self.max_size, None, self.class_names,
                            self.cams.multi_label)  # fmt: skip

    def epoch_started(self, engine: Engine) -> None:
        """Start an empty report for the epoch."""
        self.report = self.new_report(epoch_folder(self.output_dir, engine.state.epoch, self.epoch_subdir))
        self._names.reset()

    def collect(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: add the batch's cases that have CAMs to the report, named as the handler's CSV
        names them (without a handler: by their source file, as every front door names cases)."""
        if self.report is None:
            self.epoch_started(engine)
        report, output, keys = self.report, engine.state.output, self.cams.output_keys
        named = {case.index: case for case in self.cams.cases(engine)}
        for index in range(len(output) if isinstance(output, list) else _batch_size(output)):
            image, pred, label = (output_item(output, index, k) for k in (self.image_key, self.pred_key, self.label_key))
            cams = {layer: output_item(output, index, key) for layer, key in keys.items()}
            if image is None or any(not isinstance(cam, torch.Tensor) for cam in cams.values()):
                continue
            case = named.get(index)
            name = case.name if case is not None else self._names(image.meta if isinstance(image, MetaTensor) else None)
            maps = cams_from_layers(cams, self.cams.method, self.cams.classes)
            rows = [row for row in getattr(self.segcam_handler, "rows", []) if row.get("case") == name]
            label = label if isinstance(label, torch.Tensor) else None
            structures = case.structure_rows if case is not None else None
            report.add_case(name, image, pred, maps, rows=rows, label=label,  # type: ignore[union-attr]
                            structures=structures)  # fmt: skip

    def epoch_completed(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: gather the cases to ``save_rank`` and write the pages there."""
        report = self.report
        if report is None:
            return
        if idist.get_world_size() > 1:  # every rank's cases, by name (ranks interleave the data)
            for summary in gather(list(report.cases.values())):
                report.add_summary(summary)
            report.cases = dict(sorted(report.cases.items()))
        if idist.get_rank() != self.save_rank or not report.cases:
            return
        if isinstance(self.segcam_handler, SegCAMHandler):
            report.update_rows(self.segcam_handler.rows)
        path = report.write()
        if self.epoch_subdir:
            write_epochs_index(self.output_dir, report.title)
        self.written.append(path)
        flagged = sum(any(m.get("flagged") for m in row["maps"]) for row in report.index_rows())
        self.logger.info(f"SegCAMReportHandler: {len(report.cases)} cases ({flagged} flagged) in {path}")


def _batch_size(output: Any) -> int:
    tensors = [v for v in output.values() if isinstance(v, torch.Tensor)] if isinstance(output, Mapping) else []
    return len(tensors[0]) if tensors else 0
