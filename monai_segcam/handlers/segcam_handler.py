# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
""":py:class:`SegCAMHandler`: the compute, saver, statistics and TensorBoard handlers composed for bundles."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..outputs import STATS_CSV
from .compute import Engine, SegCAMComputeHandler
from .saver import SegCAMSaver
from .statistics import SegCAMStatsHandler
from .tensorboard import SegCAMTensorBoardHandler

__all__ = ["SegCAMHandler"]


class SegCAMHandler(SegCAMComputeHandler):
    """Seg-CAMs of a ``SupervisedEvaluator``'s cases (also a trainer's validation), saved and recorded: the one
    handler bundles use, a :py:class:`~monai_segcam.handlers.SegCAMComputeHandler` composed with a
    :py:class:`~monai_segcam.handlers.SegCAMSaver`, a :py:class:`~monai_segcam.handlers.SegCAMStatsHandler` and a
    :py:class:`~monai_segcam.handlers.SegCAMTensorBoardHandler` (:py:attr:`handlers`).

    - ``FORWARD_COMPLETED``: each selected case's CAM, from the evaluator's prediction, batch first into
      ``engine.state.output`` (``cam_key``, or ``f"{cam_key}_{layer}"`` per layer when ``layers`` is a list) on the
      network input grid, for the postprocessing (``Invertd(keys=["pred", "cam"], nearest_interp=False)``).
    - ``ITERATION_COMPLETED``: per case, layer and class ``{case}_cam_{method}_{layer}_class{c}.nii.gz`` (the
      postprocessed CAM, e.g. inverted) and ``.png`` in ``output_dir``; TensorBoard images.
      With ``structures``, ``{case}_structures.csv`` (share and density of each saved map per structure).
    - ``EPOCH_COMPLETED``: the statistics CSV ``csv_name`` (a row per case, layer and class), gathered across ranks;
      with ``structures``, ``segcam_structures.csv`` (mean and spread per layer, method, class and structure).

    Files are written atomically and rows journaled: a run killed at any point and started again with
    ``resume=True`` completes the outputs without duplicates. Training is never changed.

    Args:
        network: the network to explain; defaults to the engine's ``network``.
        layers, method, classes, region: as for :py:class:`~monai_segcam.transforms.ComputeSegCAM`.
        inferer: the inferer whose windows the CAM uses (see :py:func:`~monai_segcam.explainers.make_segcam`);
            defaults to the engine's ``inferer``.
        cam_key: the output key of the CAM.
        image_key: the output key of the network input.
        pred_key: the output key of the prediction (``None``: the CAM engine predicts again).
        label_key: the output key of the ground truth (``None`` or an unusable label: no label-based stats).
        output_dir: where files and the CSV go; ``None`` saves nothing (the CAM is still in the output).
        save_nifti: save the CAMs as NIfTI files (when ``output_dir`` is given).
        save_png: save orthogonal-slice PNG files (when ``output_dir`` is given; needs matplotlib).
        save_dicom: save each CAM as a DICOM Parametric Map ``.dcm`` in the study and frame of reference of the DICOM
            series it was read from (its ``filename_or_obj``; needs ``monai-segcam[dicom]``).
        csv_name: the CSV file name in ``output_dir``; ``None`` writes no CSV.
        structures: write the structure tables of the saved maps: ``True`` in the segmentation (``pred_key``, after
            postprocessing: a label map, one-hot or scores, on the saved maps' grid, e.g. inverted like them), a key
            of the engine output holding another label volume (a reference label, an atlas), ``False``: none.
        structure_names: label value (or channel) -> structure name, e.g. the bundle's label names.
        epoch_subdir: save into ``output_dir/epoch_NNNN`` (for a trainer's validation every few epochs).
        summary_writer: a TensorBoard ``SummaryWriter`` to log slices to.
        tensorboard_dir: a folder for a ``SummaryWriter`` the handler creates (and closes at ``COMPLETED``).
        global_step_transform: the TensorBoard step from the engine; defaults to ``engine.state.epoch``.
        interval: run every ``interval`` epochs (``epoch_level=True``) or iterations (``epoch_level=False``).
        epoch_level: see ``interval``.
        cases: the case names (as in the file names) or a predicate on them choosing the cases; ``None``: all.
        max_cases: at most this many cases per epoch and rank.
        on_error: ``"raise"`` (default) or ``"skip"``, see :py:class:`OnError`.
        resume: skip the cases whose files exist and whose rows were recorded (CSV or journal); keep their rows.
        save_rank: the rank that writes the CSV.
        name: the logger name of the handler and its composed handlers; defaults to the compute module's name.
        output_transform: ``engine.state.output -> (image, pred, label)`` (batch first), like MONAI handlers'.
        amp: compute the CAMs under ``torch.autocast``; ``None`` (default): as the evaluator predicts. MONAI's
            evaluators autocast CUDA operations only (``torch.autocast("cuda", **amp_kwargs)``), so an ``amp=True``
            evaluator gets float16 CAMs (or its ``amp_kwargs`` dtype) on a CUDA network and float32 CAMs on the CPU.
        compute_kwargs: the other arguments above (those of :py:class:`~monai_segcam.handlers.SegCAMComputeHandler`)
            and further options of the CAM engine (``target``, ``relu``, ``multi_label``, ``output_selector``...).

    Example:
        .. code-block:: python

            evaluator = SupervisedEvaluator(
                device, val_loader, net, inferer=SlidingWindowInferer(roi_size=(96, 96, 96)),
                postprocessing=post,
                val_handlers=[
                    SegCAMHandler(layers="pre_head", classes=1, output_dir="cams", save_png=True, on_error="skip"),
                ],
            )
            evaluator.run()
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        output_dir: str | os.PathLike | None = None,
        save_nifti: bool = True,
        save_png: bool = False,
        save_dicom: bool = False,
        csv_name: str | None = STATS_CSV,
        epoch_subdir: bool = False,
        summary_writer: Any | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
        global_step_transform: Callable[[Engine], int] | None = None,
        resume: bool = False,
        save_rank: int = 0,
        structures: bool | str = False,
        structure_names: Mapping[int, str] | None = None,
        **compute_kwargs: Any,
    ) -> None:
        super().__init__(network, done=self._done if resume else None, **compute_kwargs)
        self.saver = None
        if output_dir is not None and (save_nifti or save_png or save_dicom):
            self.saver = SegCAMSaver(self, output_dir, save_nifti, save_png, epoch_subdir, save_dicom, structures,
                                     structure_names)  # fmt: skip
        elif structures:
            raise ValueError("structures=... writes beside the saved maps: give output_dir with save_nifti or save_png.")
        if resume and self.saver is None:
            raise ValueError("resume=True needs files to resume from: give output_dir with save_nifti or save_png.")
        self.stats = SegCAMStatsHandler(self, output_dir, csv_name, epoch_subdir, save_rank)
        self.tensorboard = None
        if summary_writer is not None or tensorboard_dir is not None:
            self.tensorboard = SegCAMTensorBoardHandler(self, summary_writer, tensorboard_dir, global_step_transform)

    @property
    def handlers(self) -> list[Any]:
        """The handlers composed with the compute step, in the order they run at each event."""
        return [h for h in (self.saver, self.stats, self.tensorboard) if h is not None]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """This epoch's CSV rows (on ``save_rank`` after ``EPOCH_COMPLETED``: every rank's, merged)."""
        return self.stats.rows

    @property
    def failed(self) -> dict[str, str]:
        """This epoch's failed cases and their errors (this rank's)."""
        return self.stats.failed

    def attach(self, engine: Engine) -> None:
        """Attach the compute step and the composed handlers to ``engine``.

        Example:
            .. code-block:: python

                SegCAMHandler(classes=1, output_dir="cams").attach(evaluator)
        """
        super().attach(engine)
        for handler in self.handlers:
            handler.attach(engine)

    def _done(self, name: str, engine: Engine) -> bool:
        return self.saver is not None and self.saver.complete(name, engine) and self.stats.recorded(name, engine)
