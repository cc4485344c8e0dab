# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""An Ignite handler writing a browser review report of the cases an evaluator explained."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.utils import IgniteInfo, ensure_tuple, min_version, optional_import
from monai.utils.dist import string_list_all_gather

from ..outputs import cam_output_keys, epoch_folder, safe_case_name
from ..report import SegCAMReport
from ..report.stats import DEFAULT_FLAG_THRESHOLD
from ..report.writer import write_epochs_index
from .compute import rank_and_world
from .segcam_handler import SegCAMHandler

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["SegCAMReportHandler"]


class SegCAMReportHandler:
    """Collect the explained cases of an evaluator and write a review report (:py:class:`~monai_segcam.report.
    SegCAMReport`) at ``EPOCH_COMPLETED``.

    At ``ITERATION_COMPLETED`` (after the engine's postprocessing) it reads, per case of ``engine.state.output``,
    the image, the prediction, the label when there is one and the CAM keys that :py:class:`SegCAMHandler` writes
    (``cam`` for one layer, ``cam_<layer>`` for several); cases without CAM keys (not selected) are left out. The
    volumes may lie on different grids (e.g. the network input and, after ``Invertd``, the original image grid):
    the report places them through their affines, on the image's grid. With ``segcam_handler`` its layers, method,
    classes, keys and multi-label setting are used, and its statistics rows (:py:attr:`SegCAMHandler.rows`) fill the
    report's table; attach this handler *after* it (later in ``val_handlers``).

    Under ``torch.distributed`` each rank stores its own cases and ``save_rank`` writes the pages of all of them,
    in the order of their names (in one process: in the order of the data).

    Args:
        output_dir: the report folder (``index.html`` inside); with ``epoch_subdir`` one report per epoch in
            ``output_dir/epoch_NNNN/`` and an ``index.html`` listing them.
        segcam_handler: the :py:class:`SegCAMHandler` whose CAMs and rows are reported.
        layers: without ``segcam_handler``: the layer(s) of the CAM keys (a string: one key ``cam_key``).
        method: without ``segcam_handler``: the method's name.
        classes: without ``segcam_handler``: the classes of the CAM channels.
        multi_label: without ``segcam_handler``: prediction and label channels are independent binary masks.
        cam_key: without ``segcam_handler``: the CAM output key (``f"{cam_key}_{layer}"`` per layer of a list).
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

    Example:
        .. code-block:: python

            cams = SegCAMHandler(layers=["bottleneck", "pre_head"], classes=[1, 2], output_dir="eval")
            evaluator = SupervisedEvaluator(..., val_handlers=[cams, SegCAMReportHandler("eval/report", cams)])
            evaluator.run()  # eval/report/index.html
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        segcam_handler: SegCAMHandler | None = None,
        layers: str | Sequence[str] = "pre_head",
        method: str = "hirescam",
        classes: int | Sequence[int] = 1,
        multi_label: bool = False,
        cam_key: str = "cam",
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
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.segcam_handler = segcam_handler
        if segcam_handler is not None:
            self.keys = dict(segcam_handler.output_keys)
            self.method, self.classes = segcam_handler.method, tuple(segcam_handler.classes)
            self.multi_label = segcam_handler.multi_label
        else:
            self.keys = cam_output_keys(cam_key, layers)
            self.method, self.classes = method, tuple(int(c) for c in ensure_tuple(classes))
            self.multi_label = multi_label
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.epoch_subdir = epoch_subdir
        self.report_options = {
            "title": title, "flag_threshold": flag_threshold, "max_size": max_size, "class_names": class_names,
        }  # fmt: skip
        SegCAMReport(self.output_dir, **self.report_options)  # checks the options now
        self.save_rank = save_rank
        self.logger = logging.getLogger(name or __name__)
        self.report: SegCAMReport | None = None
        self.written: list[str] = []

    def attach(self, engine: Engine) -> None:
        """Register the handler's events on ``engine``.

        Example:
            .. code-block:: python

                SegCAMReportHandler("report", cam_handler).attach(evaluator)
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def folder(self, engine: Engine) -> str:
        """The report folder of the engine's current epoch."""
        return epoch_folder(self.output_dir, engine.state.epoch, self.epoch_subdir)

    def epoch_started(self, engine: Engine) -> None:
        """Start an empty report for the epoch."""
        self.report = SegCAMReport(self.folder(engine), multi_label=self.multi_label, **self.report_options)

    def collect(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: add the batch's cases that have CAMs to the report."""
        if self.report is None:
            self.epoch_started(engine)
        for item in _items(engine.state.output):
            cams = {layer: item.get(key) for layer, key in self.keys.items()}
            image = item.get(self.image_key)
            if image is None or any(not isinstance(cam, torch.Tensor) for cam in cams.values()):
                continue
            name = safe_case_name(image.meta if isinstance(image, MetaTensor) else None, default="case")
            name = self._unique(name)
            maps = {}
            for layer, cam in cams.items():
                for j, c in enumerate(self.classes):
                    maps[(layer, self.method, c)] = cam[j : j + 1]
            rows = [row for row in getattr(self.segcam_handler, "rows", []) if row.get("case") == name]
            pred = item.get(self.pred_key) if self.pred_key is not None else None
            label = item.get(self.label_key) if self.label_key is not None else None
            label = label if isinstance(label, torch.Tensor) else None
            self.report.add_case(name, image, pred, maps, rows=rows, label=label)  # type: ignore[union-attr]

    def epoch_completed(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: gather the cases to ``save_rank`` and write the pages there."""
        report = self.report
        if report is None:
            return
        rank, world = rank_and_world()
        if world > 1:
            texts = string_list_all_gather([json.dumps(summary) for summary in report.cases.values()])
            summaries = [json.loads(text) for text in texts if text]
            if rank != self.save_rank:
                return
            for summary in summaries:
                report.add_summary(summary)
            report.cases = {name: report.cases[name] for name in sorted(report.cases)}  # ranks interleave the data
        if rank != self.save_rank or not report.cases:
            return
        if self.segcam_handler is not None:
            report.update_rows(self.segcam_handler.rows)
        path = report.write()
        if self.epoch_subdir:
            write_epochs_index(self.output_dir, report.title)
        self.written.append(path)
        flagged = sum(any(m.get("flagged") for m in row["maps"]) for row in report.index_rows())
        self.logger.info(f"SegCAMReportHandler: {len(report.cases)} cases ({flagged} flagged) in {path}")

    def _unique(self, name: str) -> str:
        cases = self.report.cases if self.report is not None else {}
        unique, n = name, 1
        while unique in cases:
            n += 1
            unique = f"{name}_{n}"
        return unique


def _items(output: Any) -> list[dict[str, Any]]:
    """The per-case dicts of an engine output: decollated (a list of dicts) or batch first (a dict)."""
    if isinstance(output, Mapping):
        tensors = [v for v in output.values() if isinstance(v, torch.Tensor)]
        size = tensors[0].shape[0] if tensors else 0
        return [{k: v[i] if isinstance(v, torch.Tensor) else v for k, v in output.items()} for i in range(size)]
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)):
        return [item for item in output if isinstance(item, Mapping)]
    return []
