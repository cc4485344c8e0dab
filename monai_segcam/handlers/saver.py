# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The saver handler: the CAM files of each computed case after postprocessing, by the one writer."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor

from ..outputs import (
    CAMWriter,
    check_cam_geometry,
    epoch_folder,
    remove_stale_temporaries,
    structure_rows,
    structures_file_name,
    write_structures,
)
from .compute import CAMCase, Engine, Events, SegCAMComputeHandler, fail_case, output_item
from .pictures import case_picture

__all__ = ["SegCAMSaver"]


class SegCAMSaver:
    """At ``ITERATION_COMPLETED`` (after postprocessing), write each computed case's CAMs with
    :py:class:`~monai_segcam.outputs.CAMWriter`, a case's files all or none: the NIfTI of the postprocessed CAM when it
    is a ``MetaTensor`` (e.g. after ``Invertd``), else of the network-grid CAM, with its own affine, checked by
    :py:func:`~monai_segcam.outputs.check_cam_geometry`; the PNG drawn from :py:func:`case_picture`: the postprocessed
    CAM over the input file's image when the postprocessing took it onto the file's grid (as the command line draws
    it), else the network-grid CAM over the network input.
    With ``structures``, also ``<case>_structures.csv``: the share and density of each saved map in each structure of
    a label volume of the engine output on the saved maps' grid (:py:func:`~monai_segcam.outputs.structure_rows`).

    Args:
        compute: the :py:class:`~monai_segcam.handlers.SegCAMComputeHandler` whose cases are saved (its method, layer
            keys, classes, ``pred_key``, error policy and logger are used).
        output_dir, save_nifti, save_png, epoch_subdir, save_dicom, structures, structure_names: as for
            :py:class:`~monai_segcam.handlers.SegCAMHandler`.

    Example:
        .. code-block:: python

            compute = SegCAMComputeHandler(classes=1)
            for handler in (compute, SegCAMSaver(compute, "cams", save_png=True)):
                handler.attach(evaluator)
    """

    def __init__(
        self,
        compute: SegCAMComputeHandler,
        output_dir: str | os.PathLike,
        save_nifti: bool = True,
        save_png: bool = False,
        epoch_subdir: bool = False,
        save_dicom: bool = False,
        structures: bool | str = False,
        structure_names: Mapping[int, str] | None = None,
    ) -> None:
        self.compute, self.output_dir = compute, os.fspath(output_dir)
        self.save_nifti, self.save_png, self.epoch_subdir = save_nifti, save_png, epoch_subdir
        self.save_dicom = save_dicom
        if structures is True and compute.pred_key is None:
            raise ValueError("structures=True takes the segmentation from pred_key: give pred_key or a label key.")
        self.structures_key = (compute.pred_key if structures is True else structures) or None
        self.structure_names = dict(structure_names or {})
        self._said_grid = False

    def attach(self, engine: Engine) -> None:
        """Register :py:meth:`epoch_started` and :py:meth:`__call__` (``ITERATION_COMPLETED``) on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def writer(self, engine: Engine) -> CAMWriter:
        """The writer of this epoch's folder."""
        folder = epoch_folder(self.output_dir, engine.state.epoch, self.epoch_subdir)
        return CAMWriter(folder, nifti=self.save_nifti, png=self.save_png, dicom=self.save_dicom)

    def complete(self, name: str, engine: Engine) -> bool:
        """Whether every file of case ``name`` exists (for ``resume``)."""
        compute = self.compute
        paths = self.writer(engine).paths(name, compute.method, list(compute.output_keys), compute.classes)
        return bool(paths) and all(os.path.exists(path) for path in paths)

    def epoch_started(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: remove the temporary files a killed run left in this epoch's folder."""
        if remove_stale_temporaries(self.writer(engine).output_dir):
            self.compute.logger.info("SegCAMHandler: removed the temporary files of an interrupted run.")

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: write the files of each computed case."""
        for case in self.compute.cases(engine):
            if case.status == "ok":
                try:
                    self._save(case, engine)
                except Exception as error:  # recorded or re-raised with the case name
                    fail_case(case, error, self.compute.on_error, self.compute.logger)

    def _save(self, case: CAMCase, engine: Engine) -> None:
        compute, output = self.compute, engine.state.output
        posts = {layer: output_item(output, case.index, key) for layer, key in compute.output_keys.items()}
        saved = {layer: post if isinstance(post, MetaTensor) else case.cams[layer] for layer, post in posts.items()}
        pred = output_item(output, case.index, compute.pred_key)
        keys = list(compute.output_keys.values())
        note = check_cam_geometry(next(iter(saved.values())), pred, case.named_by, keys)
        if note and not self._said_grid:
            self._said_grid = True
            compute.logger.warning(f"SegCAMHandler: {note}")
        writer = self.writer(engine)
        picture = case_picture(case, output, compute.output_keys) if writer.png else None
        drawn = {} if picture is None else {"image": picture.image, "regions": picture.regions, "shown": picture.maps}
        with writer.all_or_nothing():
            files = writer.write(case.name, compute.method, saved, case.classes or compute.classes, **drawn)
            if self.structures_key is not None:
                self._write_structures(case, saved, output_item(output, case.index, self.structures_key), writer)
        case.files = {key: [os.path.relpath(path, self.output_dir) for path in paths] for key, paths in files.items()}

    def _write_structures(self, case: CAMCase, saved: dict[str, Any], labels: Any, writer: CAMWriter) -> None:
        """``<case>_structures.csv`` of the saved maps in the structures of ``labels`` (on the saved maps' grid)."""
        key = self.structures_key
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"structures: the engine output has no volume under {key!r} for this case.")
        grid = tuple(next(iter(saved.values())).shape[1:])
        if tuple(labels.shape[1:]) != grid:
            raise ValueError(f"structures: {key!r} lies on a {tuple(labels.shape[1:])} grid, the saved maps on {grid}: "
                             f"invert it like the maps (Invertd keys) or give a key on their grid.")  # fmt: skip
        maps = {(layer, self.compute.method): torch.as_tensor(cam).detach().cpu() for layer, cam in saved.items()}
        rows = structure_rows(maps, case.classes or self.compute.classes, labels.detach().cpu(), self.compute.multi_label,
                              self.structure_names)  # fmt: skip
        writer.record(write_structures(os.path.join(writer.output_dir, structures_file_name(case.name)), rows))
        case.structure_rows = rows
