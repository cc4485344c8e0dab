# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The saver handler: the CAM files of each computed case at ``ITERATION_COMPLETED``, after postprocessing, written
by the one writer (:py:class:`~monai_segcam.outputs.CAMWriter`), never with a geometry the case does not have."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.utils import IgniteInfo, ensure_tuple, min_version, optional_import

from ..outputs import CAMWriter, cam_output_keys, remove_stale_temporaries
from .compute import CAMCase, OnError, fail_case

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["SegCAMSaver"]


class SegCAMSaver:
    """Save the CAMs of the computed cases at ``ITERATION_COMPLETED`` (after the engine's postprocessing).

    Per case, layer and class it writes ``{case}_cam_{method}_{layer}_class{c}.nii.gz`` (``save_nifti``) and
    ``.png`` (``save_png``: orthogonal slices through the CAM peak on the network input, with the explained region's
    contour) into ``output_dir`` (or ``output_dir/epoch_NNNN`` with ``epoch_subdir``), each file atomically, a case's
    files all or none. The NIfTI is the CAM as the postprocessing left it under its output key when that is a
    ``MetaTensor`` (e.g. after ``Invertd``: on the original image grid), else the network-input-grid CAM; either way
    with its own affine.

    The geometry is checked, so that a CAM never lands where the prediction does not:

    - a CAM without source-file metadata of its own, of a case whose source is another loaded key (a bundle that
      concatenates several loaded images into a metadata-less network input), is refused with an error naming the
      override to set (invert the CAM to that key like the bundle inverts its prediction);
    - a CAM on another grid than the postprocessed prediction (e.g. the CAM keys are missing from the
      postprocessing's ``Invertd``) is written on the network grid with that grid's true affine, and the handler
      says so once.

    Args:
        source: ``engine -> cases`` (:py:class:`~monai_segcam.handlers.CAMCase`), e.g.
            :py:meth:`SegCAMComputeHandler.cases <monai_segcam.handlers.SegCAMComputeHandler.cases>`.
        output_dir: the folder of the files.
        method: the CAM method's name (in the file names).
        layers: the layer(s), as given to the compute handler.
        classes: the explained class indices.
        cam_key: the output key of the CAM, as given to the compute handler.
        pred_key: the output key of the prediction, to compare geometries (``None``: no comparison).
        save_nifti: write NIfTI files.
        save_png: write PNG files (needs matplotlib).
        epoch_subdir: save into ``output_dir/epoch_NNNN``.
        on_error: ``"raise"`` or ``"skip"`` (see :py:class:`~monai_segcam.handlers.OnError`).
        name: the logger name.

    Example:
        .. code-block:: python

            compute = SegCAMComputeHandler(classes=1)
            saver = SegCAMSaver(compute.cases, "cams", classes=1, save_png=True)
            for handler in (compute, saver):
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
        self.source = source
        self.output_dir = os.fspath(output_dir)
        self.method = method
        self.output_keys = cam_output_keys(cam_key, layers)
        self.classes = tuple(int(c) for c in ensure_tuple(classes))
        self.pred_key = pred_key
        self.save_nifti, self.save_png, self.epoch_subdir = save_nifti, save_png, epoch_subdir
        self.on_error = on_error
        self.logger = logging.getLogger(name or __name__)
        self._said_grid = False

    def attach(self, engine: Engine) -> None:
        """Register :py:meth:`epoch_started` and :py:meth:`__call__` (``ITERATION_COMPLETED``) on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def folder(self, engine: Engine) -> str:
        """The folder of this epoch's files."""
        if self.epoch_subdir:
            return os.path.join(self.output_dir, f"epoch_{engine.state.epoch:04d}")
        return self.output_dir

    def writer(self, engine: Engine) -> CAMWriter:
        """The writer of this epoch's files."""
        return CAMWriter(self.folder(engine), nifti=self.save_nifti, png=self.save_png)

    def complete(self, name: str, engine: Engine) -> bool:
        """Whether every file of case ``name`` exists (for ``resume``)."""
        paths = self.writer(engine).paths(name, self.method, list(self.output_keys), self.classes)
        return bool(paths) and all(os.path.exists(path) for path in paths)

    def epoch_started(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: remove temporary files a killed run left in this epoch's folder."""
        removed = remove_stale_temporaries(self.folder(engine))
        if removed:
            self.logger.info(f"SegCAMHandler: removed {len(removed)} temporary file(s) of an interrupted run.")

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: write the files of each computed case."""
        for case in self.source(engine):
            if case.status != "ok":
                continue
            try:
                self._save(case, engine)
            except Exception as error:  # noqa: BLE001 -- recorded or re-raised with the case name
                fail_case(case, error, self.on_error, self.logger)

    def _save(self, case: CAMCase, engine: Engine) -> None:
        output = engine.state.output
        saved = {}
        for layer, key in self.output_keys.items():
            post = _item(output, case.index, key)
            saved[layer] = post if isinstance(post, MetaTensor) else case.cams[layer]
        self._check_geometry(case, next(iter(saved.values())), _item(output, case.index, self.pred_key))
        writer = self.writer(engine)
        image = case.image[0] if case.image is not None else None
        with writer.all_or_nothing():
            files = writer.write(case.name, self.method, saved, self.classes, image=image, regions=case.region,
                                 shown=case.cams)  # fmt: skip
        case.files = {key: [os.path.relpath(path, self.output_dir) for path in paths] for key, paths in files.items()}

    def _check_geometry(self, case: CAMCase, cam: MetaTensor, pred: Any) -> None:
        if case.named_by is not None and not cam.meta.get("filename_or_obj"):
            keys = list(self.output_keys.values())
            raise ValueError(
                f"Refusing to write the CAMs of case {case.name!r}: the network input has no source-file metadata "
                f"(it is not a loaded image, e.g. several loaded images concatenated), so the CAMs would get an "
                f"identity affine on the network grid. Invert them like the bundle inverts its prediction: set the "
                f"overlay's cam_orig_key to the key the bundle's Invertd inverts to (e.g. --cam_orig_key "
                f"{case.named_by}), or add {keys} to an Invertd with orig_keys={case.named_by!r}."
            )
        if self._said_grid or not isinstance(pred, MetaTensor) or pred.ndim != cam.ndim:
            return
        same_affine = torch.allclose(pred.affine.double().cpu(), cam.affine.double().cpu(), atol=1e-3)
        if tuple(pred.shape[1:]) != tuple(cam.shape[1:]) or not same_affine:
            self._said_grid = True
            self.logger.warning(
                f"SegCAMHandler: the CAMs are written on the network input grid {tuple(cam.shape[1:])} with its "
                f"affine, not on the prediction's grid {tuple(pred.shape[1:])}: add {list(self.output_keys.values())} "
                "to the keys of the postprocessing's Invertd to write them where the prediction lands."
            )


def _item(output: Any, index: int, key: str | None) -> Any:
    """Item ``index`` of ``key`` in the engine output: a decollated list of dicts, or a batch-first dict."""
    if key is None:
        return None
    if isinstance(output, list):
        return output[index].get(key) if index < len(output) and isinstance(output[index], Mapping) else None
    value = output.get(key) if isinstance(output, Mapping) else None
    if isinstance(value, MetaTensor) and value.is_batch and index < len(value):
        return value[index]
    return None
