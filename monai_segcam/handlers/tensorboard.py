# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The TensorBoard handler: orthogonal CAM slices of each computed case as TensorBoard images."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from monai.utils import optional_import

from ..visualize import log_cam_to_tensorboard
from .compute import Engine, Events, SegCAMComputeHandler, idist
from .pictures import case_picture

SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["SegCAMTensorBoardHandler"]


class SegCAMTensorBoardHandler:
    """Log the orthogonal slices of each computed case's CAMs (with the explained region's contour) at
    ``ITERATION_COMPLETED``, tagged ``segcam/{case}/{layer}/class{c}``: the picture the saver writes as PNG
    (:py:func:`~monai_segcam.handlers.pictures.case_picture`: on the input file's grid when the postprocessing took
    the maps there).

    Args:
        compute: the :py:class:`~monai_segcam.handlers.SegCAMComputeHandler` whose cases are logged.
        summary_writer: a TensorBoard ``SummaryWriter``.
        log_dir: a folder for a ``SummaryWriter`` the handler creates (one file per rank) and closes at ``COMPLETED``.
        global_step_transform: the step from the engine; defaults to ``engine.state.epoch``.

    Example:
        .. code-block:: python

            compute = SegCAMComputeHandler(layers="bottleneck", classes=1, interval=5)  # every 5th validation
            compute.attach(evaluator)
            SegCAMTensorBoardHandler(compute, summary_writer=writer).attach(evaluator)  # the training's SummaryWriter
    """

    def __init__(
        self,
        compute: SegCAMComputeHandler,
        summary_writer: Any | None = None,
        log_dir: str | os.PathLike | None = None,
        global_step_transform: Callable[[Engine], int] | None = None,
    ) -> None:
        if summary_writer is not None and log_dir is not None:
            raise ValueError("Give summary_writer or tensorboard_dir, not both.")
        self.compute = compute
        self.summary_writer, self.log_dir, self._own_writer = summary_writer, log_dir, False
        self.global_step_transform = global_step_transform or (lambda engine: engine.state.epoch)

    def attach(self, engine: Engine) -> None:
        """Register :py:meth:`__call__` (``ITERATION_COMPLETED``) and :py:meth:`close` (``COMPLETED``)."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: log the slices of each computed case."""
        step = self.global_step_transform(engine)
        for case in self.compute.cases(engine):
            if case.status != "ok" or case.image is None:
                continue
            picture = case_picture(case, engine.state.output, self.compute.output_keys)
            for layer, cam in picture.maps.items():
                for j, c in enumerate(self.compute.classes):
                    region = None if picture.regions is None else picture.regions[j]
                    tag = f"segcam/{case.name}/{layer}/class{c}"
                    log_cam_to_tensorboard(
                        self._writer(), tag, picture.image, cam[j], region=region, step=step, affine=picture.affine
                    )  # fmt: skip

    def close(self, engine: Engine) -> None:
        """``COMPLETED``: close the ``SummaryWriter`` the handler created."""
        if self._own_writer and self.summary_writer is not None:
            self.summary_writer.close()
            self.summary_writer, self._own_writer = None, False

    def _writer(self) -> Any:
        if self.summary_writer is None:
            suffix = f".rank{idist.get_rank()}" if idist.get_world_size() > 1 else ""
            log_dir = None if self.log_dir is None else os.fspath(self.log_dir)
            self.summary_writer = SummaryWriter(log_dir=log_dir, filename_suffix=suffix)
            self._own_writer = True
        return self.summary_writer
