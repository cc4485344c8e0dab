# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The saver handler: the CAM files of each computed case after postprocessing, by the one writer."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.data import MetaTensor
from monai.utils import ensure_tuple

from ..outputs import CAMWriter, cam_output_keys, check_cam_geometry, epoch_folder, remove_stale_temporaries
from .compute import CAMCase, Engine, Events, OnError, fail_case

__all__ = ["SegCAMSaver"]


class SegCAMSaver:
    """At ``ITERATION_COMPLETED`` (after postprocessing), write each computed case's CAMs with
    :py:class:`~monai_segcam.outputs.CAMWriter`, a case's files all or none: the NIfTI of the postprocessed CAM when it
    is a ``MetaTensor`` (e.g. after ``Invertd``), else of the network-grid CAM, with its own affine, checked by
    :py:func:`~monai_segcam.outputs.check_cam_geometry`; the PNG of the network-grid CAM over the network input.

    Args:
        source: ``engine -> cases``, e.g. :py:meth:`~monai_segcam.handlers.SegCAMComputeHandler.cases`.
        output_dir, method, layers, classes, cam_key, pred_key, save_nifti, save_png, epoch_subdir, on_error, name:
            as for :py:class:`~monai_segcam.handlers.SegCAMHandler`.

    Example:
        .. code-block:: python

            compute = SegCAMComputeHandler(classes=1)
            for handler in (compute, SegCAMSaver(compute.cases, "cams", classes=1, save_png=True)):
                handler.attach(evaluator)
    """

    def __init__(
        self,
        source: Callable[[Engine], Sequence[CAMCase]],
        output_dir: str | os.PathLike,
        method: str = "hirescam",
        layers: str | Sequence[str] = "pre_head",
        classes: int | Sequence[int] = 1,
        cam_key: str = "cam",
        pred_key: str | None = "pred",
        save_nifti: bool = True,
        save_png: bool = False,
        epoch_subdir: bool = False,
        on_error: str = OnError.RAISE,
        name: str | None = None,
    ) -> None:
        self.source, self.output_dir, self.method = source, os.fspath(output_dir), method
        self.output_keys = cam_output_keys(cam_key, layers)
        self.classes = tuple(int(c) for c in ensure_tuple(classes))
        self.pred_key, self.on_error = pred_key, on_error
        self.save_nifti, self.save_png, self.epoch_subdir = save_nifti, save_png, epoch_subdir
        self.logger = logging.getLogger(name or __name__)
        self._said_grid = False

    def attach(self, engine: Engine) -> None:
        """Register :py:meth:`epoch_started` and :py:meth:`__call__` (``ITERATION_COMPLETED``) on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def writer(self, engine: Engine) -> CAMWriter:
        """The writer of this epoch's folder."""
        folder = epoch_folder(self.output_dir, engine.state.epoch, self.epoch_subdir)
        return CAMWriter(folder, nifti=self.save_nifti, png=self.save_png)

    def complete(self, name: str, engine: Engine) -> bool:
        """Whether every file of case ``name`` exists (for ``resume``)."""
        paths = self.writer(engine).paths(name, self.method, list(self.output_keys), self.classes)
        return bool(paths) and all(os.path.exists(path) for path in paths)

    def epoch_started(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: remove the temporary files a killed run left in this epoch's folder."""
        if remove_stale_temporaries(self.writer(engine).output_dir):
            self.logger.info("SegCAMHandler: removed the temporary files of an interrupted run.")

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: write the files of each computed case."""
        for case in self.source(engine):
            if case.status == "ok":
                try:
                    self._save(case, engine)
                except Exception as error:  # recorded or re-raised with the case name
                    fail_case(case, error, self.on_error, self.logger)

    def _save(self, case: CAMCase, engine: Engine) -> None:
        posts = {layer: _item(engine.state.output, case.index, key) for layer, key in self.output_keys.items()}
        saved = {layer: post if isinstance(post, MetaTensor) else case.cams[layer] for layer, post in posts.items()}
        pred = _item(engine.state.output, case.index, self.pred_key)
        note = check_cam_geometry(next(iter(saved.values())), pred, case.named_by, list(self.output_keys.values()))
        if note and not self._said_grid:
            self._said_grid = True
            self.logger.warning(f"SegCAMHandler: {note}")
        writer = self.writer(engine)
        image = case.image[0] if case.image is not None else None
        with writer.all_or_nothing():
            files = writer.write(case.name, self.method, saved, self.classes, image=image, regions=case.region,
                                 shown=case.cams)  # fmt: skip
        case.files = {key: [os.path.relpath(path, self.output_dir) for path in paths] for key, paths in files.items()}


def _item(output: Any, index: int, key: str | None) -> Any:
    """Item ``index`` of ``key`` in the engine output: a decollated list of dicts, or a batch-first dict."""
    if key is None:
        return None
    if isinstance(output, list):
        return output[index].get(key) if index < len(output) and isinstance(output[index], Mapping) else None
    value = output.get(key) if isinstance(output, Mapping) else None
    return value[index] if isinstance(value, MetaTensor) and value.is_batch and index < len(value) else None
