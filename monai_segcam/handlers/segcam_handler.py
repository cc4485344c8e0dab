# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""An Ignite handler computing Seg-CAMs during evaluation (also a trainer's validation), saving and recording them."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from monai.utils import IgniteInfo, StrEnum, ensure_tuple, look_up_option, min_version, optional_import
from monai.utils.dist import string_list_all_gather
from torch import nn

from ..cam import Region, SegCAM, SlidingWindowSegCAM
from ..cam.regions import as_region, region_weights
from ..inferers.segcam_inferer import make_segcam, region_source
from ..metrics import pointing_game, relevance_mass
from ..utils.io import atomic_output, safe_case_name, safe_path, safe_token, save_nifti_atomic
from ..visualize import log_cam_to_tensorboard, plot_orthogonal_slices, save_figure
from .cam_output import cam_output_keys

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["SegCAMHandler", "OnError", "CSV_COLUMNS", "STAT_COLUMNS"]

STAT_COLUMNS = (
    "max",
    "mean",
    "std",
    "region_voxels",
    "relevance_mass_region",
    "relevance_mass_label",
    "pointing_game_label",
)
CSV_COLUMNS = ("case", "epoch", "layer", "method", "class", "status", "error", *STAT_COLUMNS, "files", "n")


class OnError(StrEnum):
    """What :py:class:`SegCAMHandler` does when a case fails: ``"raise"`` (naming the case) or ``"skip"`` (record
    the case and its error in the CSV and :py:attr:`SegCAMHandler.failed`, and continue)."""

    RAISE = "raise"
    SKIP = "skip"


@dataclass
class _Case:
    """One computed case, between ``FORWARD_COMPLETED`` and ``ITERATION_COMPLETED``."""

    index: int
    name: str
    image: torch.Tensor
    cams: dict[str | None, MetaTensor]
    region: torch.Tensor | None
    rows: list[dict[str, Any]] = field(default_factory=list)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class SegCAMHandler:
    """Compute Seg-CAMs at ``IterationEvents.FORWARD_COMPLETED`` of a ``SupervisedEvaluator``, reusing its prediction.

    At ``FORWARD_COMPLETED`` ``engine.state.output`` is the batch-first dict ``{"image", "label", "pred"}``. The
    handler reads it, computes the CAM of each selected case from its prediction (no extra prediction pass for
    prediction-based regions) and, when every case of the batch has one, writes it batch first into
    ``engine.state.output[cam_key]`` (``f"{cam_key}_{layer}"`` per layer when ``layers`` is a list), on the network
    input grid with the image's metadata: the engine's postprocessing (``Invertd(keys=["pred", "cam"],
    nearest_interp=False)``, ``SaveImaged``) then handles it like the prediction. Batches where a case was not
    selected, failed or was resumed get no CAM key (use ``allow_missing_keys=True`` in such postprocessing).

    At ``ITERATION_COMPLETED`` (after postprocessing) it saves, per case, layer and class, into ``output_dir``:

    - NIfTI files ``{case}_cam_{method}_{layer}_class{c}.nii.gz``; when the postprocessing kept the CAM key as a
      ``MetaTensor`` (e.g. after ``Invertd``) that version is saved, on the original image grid, otherwise the network
      input grid version; either way with its own affine;
    - PNG files of orthogonal slices through the CAM peak with the explained region's contour (``save_png``);
    - TensorBoard images (``summary_writer`` or ``tensorboard_dir``), tagged ``segcam/{case}/{layer}/class{c}``.

    At ``EPOCH_COMPLETED`` it writes ``csv_name`` in ``output_dir``: one row per case, layer and class (CAM maximum,
    mean, standard deviation, size of the explained region, relevance mass inside it, relevance mass and pointing game
    inside the label when a label is given, files written), failed cases with their error, and ``mean``/``std``
    summary rows per layer and class (``n`` is the number of cases summarised).

    Under ``torch.distributed`` each rank handles the cases of its data partition (``DistributedSampler``) and writes
    their files; the CSV rows are gathered to ``save_rank``, which writes the CSV (duplicates that the sampler's
    padding creates are dropped).

    The handler never changes training: the network's train/eval state and ``requires_grad`` flags are restored
    (CAMs are computed in ``eval()`` mode), only activations are differentiated (no parameter ``.grad``) and no random
    number generator is used.

    Args:
        network: the network to explain; defaults to the engine's ``network``.
        layers: the CAM layer(s), see :py:class:`~monai_segcam.SegCAM`.
        method: the CAM method, see :py:class:`~monai_segcam.SegCAM`.
        classes: the explained class index or indices.
        region: the explained region: ``"pred"``, ``"label"``, ``"fp"``, ``"fn"``, ``"all"``, a
            :py:class:`~monai_segcam.Voxel`, a mask ``(1, n, *spatial)`` shared by every case...
        inferer: the inferer whose windows the CAM uses; defaults to the engine's ``inferer``. A
            ``SlidingWindowInferer`` gives :py:class:`~monai_segcam.SlidingWindowSegCAM` with its settings, a
            ``SimpleInferer`` gives whole-volume :py:class:`~monai_segcam.SegCAM`.
        cam_key: the output key of the CAM.
        image_key: the output key of the network input.
        pred_key: the output key of the prediction (``None``: the CAM engine predicts again).
        label_key: the output key of the ground truth (``None`` or a missing label: no label-based region/stats).
        output_dir: where files and the CSV go; ``None`` saves nothing (the CAM is still in the output).
        save_nifti: save the CAMs as NIfTI files (when ``output_dir`` is given).
        save_png: save orthogonal-slice PNG files (when ``output_dir`` is given; needs matplotlib).
        csv_name: the CSV file name in ``output_dir``; ``None`` writes no CSV.
        epoch_subdir: save into ``output_dir/epoch_NNNN`` (for a trainer's validation every few epochs).
        summary_writer: a TensorBoard ``SummaryWriter`` to log slices to.
        tensorboard_dir: a folder for a ``SummaryWriter`` the handler creates (and closes at ``COMPLETED``).
        global_step_transform: the TensorBoard step from the engine; defaults to ``engine.state.epoch`` (in a
            trainer's validation evaluator this is the trainer's epoch).
        interval: run every ``interval`` epochs (``epoch_level=True``) or iterations (``epoch_level=False``).
        epoch_level: see ``interval``.
        cases: the case names (as in the file names) or a predicate on them choosing the cases; ``None``: all.
        max_cases: at most this many cases per epoch and rank.
        on_error: ``"raise"`` (default) or ``"skip"``, see :py:class:`OnError`.
        resume: skip the cases whose files all exist already (their CSV rows are kept from the existing CSV).
        save_rank: the rank that writes the CSV.
        name: the logger name; defaults to this module's name.
        cam_kwargs: further options of the CAM engine (``target``, ``relu``, ``multi_label``, ``output_selector``...).

    Raises:
        ValueError: for invalid options (e.g. ``resume`` without files to resume from).

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
        layers: str | Sequence[str] = "pre_head",
        method: str = "hirescam",
        classes: int | Sequence[int] = 1,
        region: str | Region | torch.Tensor = "pred",
        inferer: Inferer | None = None,
        cam_key: str = "cam",
        image_key: str = "image",
        pred_key: str | None = "pred",
        label_key: str | None = "label",
        output_dir: str | os.PathLike | None = None,
        save_nifti: bool = True,
        save_png: bool = False,
        csv_name: str | None = "segcam_stats.csv",
        epoch_subdir: bool = False,
        summary_writer: Any | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
        global_step_transform: Callable[[Engine], int] | None = None,
        interval: int = 1,
        epoch_level: bool = True,
        cases: Sequence[str] | Callable[[str], bool] | None = None,
        max_cases: int | None = None,
        on_error: str = OnError.RAISE,
        resume: bool = False,
        save_rank: int = 0,
        name: str | None = None,
        **cam_kwargs: Any,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be a positive integer, got {interval}.")
        if max_cases is not None and max_cases < 0:
            raise ValueError(f"max_cases must be None or non-negative, got {max_cases}.")
        if resume and (output_dir is None or not (save_nifti or save_png)):
            raise ValueError("resume=True needs files to resume from: give output_dir with save_nifti or save_png.")
        if summary_writer is not None and tensorboard_dir is not None:
            raise ValueError("Give summary_writer or tensorboard_dir, not both.")
        self.network = network
        self.cam_kwargs = {"layers": layers, "method": method, **cam_kwargs}
        self.layer_names = None if isinstance(layers, str) else [str(layer) for layer in ensure_tuple(layers)]
        self.layer_list = [str(layers)] if self.layer_names is None else self.layer_names
        self.method_name = method if isinstance(method, str) else type(method).__name__
        self.classes = tuple(int(c) for c in ensure_tuple(classes))
        self.region = region
        self.inferer = inferer
        self.cam_key = cam_key
        self.output_keys = cam_output_keys(cam_key, self.layer_names)
        self.image_key = image_key
        self.pred_key = pred_key
        self.label_key = label_key
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.save_nifti = save_nifti
        self.save_png = save_png
        self.csv_name = csv_name
        self.epoch_subdir = epoch_subdir
        self.summary_writer = summary_writer
        self.tensorboard_dir = tensorboard_dir
        self._own_writer = False
        self.global_step_transform = global_step_transform or (lambda engine: engine.state.epoch)
        self.interval = interval
        self.epoch_level = epoch_level
        self.cases = cases
        self.max_cases = max_cases
        self.on_error = look_up_option(on_error, OnError)
        self.resume = resume
        self.save_rank = save_rank
        self.multi_label = bool(cam_kwargs.get("multi_label", False))
        self.logger = logging.getLogger(name or __name__)
        self.segcam: SegCAM | SlidingWindowSegCAM | None = None
        self.rows: list[dict[str, Any]] = []
        self.failed: dict[str, str] = {}
        self._pending: list[_Case] = []
        self._sources: dict[str, str] = {}
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Register the handler's events on ``engine``; the CAM engine is built at ``STARTED`` (workflows attach
        handlers before they set their ``network`` and ``inferer``).

        Example:
            .. code-block:: python

                SegCAMHandler(classes=1, output_dir="cams").attach(evaluator)
        """
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.compute)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.save)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.close)

    # events -----------------------------------------------------------------------------------------------------

    def started(self, engine: Engine) -> None:
        """``STARTED``: check ``save_rank`` and build the CAM engine from the engine's network and inferer."""
        _, world = _rank_and_world()
        if not 0 <= self.save_rank < world:
            raise ValueError(f"save_rank {self.save_rank} is not a rank of this run (world size {world}).")
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if not isinstance(network, nn.Module):
            raise ValueError("SegCAMHandler needs a network: pass `network=` or attach it to an engine with one.")
        inferer = self.inferer if self.inferer is not None else getattr(engine, "inferer", None)
        if self.segcam is None or self.segcam.network is not network:
            self.segcam = make_segcam(network, inferer, **self.cam_kwargs)

    def epoch_started(self, engine: Engine) -> None:
        """Forget the previous epoch's rows, failures and case names."""
        self.rows, self.failed, self._pending, self._sources, self._count = [], {}, [], {}, 0

    def compute(self, engine: Engine) -> None:
        """``FORWARD_COMPLETED``: the CAMs of the batch's selected cases, into ``engine.state.output``."""
        self._pending = []
        if not self._active(engine):
            return
        output = engine.state.output
        if not isinstance(output, dict) or self.image_key not in output:
            raise KeyError(
                f"SegCAMHandler expects engine.state.output to be a dict with {self.image_key!r} at FORWARD_COMPLETED "
                "(a SupervisedEvaluator's output); check image_key."
            )
        image = output[self.image_key]
        pred = output.get(self.pred_key) if self.pred_key is not None else None
        label = output.get(self.label_key) if self.label_key is not None else None
        label = label if isinstance(label, torch.Tensor) else None
        computed = []
        for i in range(image.shape[0]):
            item = image[i]  # a batched MetaTensor gives the item's own metadata
            name = self._case_name(item, i, engine)
            if not self._selected(name):
                continue
            self._count += 1
            if self.resume and all(os.path.exists(path) for path in self._case_files(name, engine).values()):
                self.rows += self._case_rows(name, engine, "resumed")
                continue
            try:
                case = self._compute_case(i, name, item, pred, label, engine)
            except Exception as error:  # noqa: BLE001 -- recorded or re-raised with the case name
                self._fail(name, error, engine)
                continue
            self._pending.append(case)
            computed.append(case)
        if computed and len(computed) == image.shape[0]:
            for layer, key in self.output_keys.items():
                stacked = MetaTensor(torch.stack([case.cams[layer].as_tensor() for case in computed]))
                output[key] = stacked.copy_meta_from(image) if isinstance(image, MetaTensor) else stacked

    def save(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: save the computed cases' files and record their rows."""
        pending, self._pending = self._pending, []
        for case in pending:
            try:
                files = self._save_case(case, engine)
            except Exception as error:  # noqa: BLE001 -- recorded or re-raised with the case name
                self._fail(case.name, error, engine)
                continue
            for row in case.rows:
                row["files"] = ";".join(files.get((row["layer"], row["class"]), []))
            self.rows += case.rows

    def epoch_completed(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: gather the rows to ``save_rank`` and write the CSV there."""
        if self.epoch_level and engine.state.epoch % self.interval:
            return
        rank, _ = _rank_and_world()
        texts = string_list_all_gather([json.dumps(row) for row in self.rows])
        gathered = [json.loads(text) for text in texts if text]  # a rank without rows sends ""
        if rank != self.save_rank:
            return
        rows = self._merge(gathered, engine)
        self.rows = rows
        failed = [row for row in rows if row["status"] == "failed"]
        if failed:
            messages = sorted({f"{row['case']}: {row['error']}" for row in failed})
            self.logger.warning(f"SegCAMHandler: {len(messages)} case(s) failed: " + "; ".join(messages))
        if self.output_dir is not None and self.csv_name is not None:
            path = safe_path(self._folder(engine), self.csv_name)
            with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
                writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                writer.writerows(rows + _summary(rows))

    def close(self, engine: Engine) -> None:
        """``COMPLETED``: close the ``SummaryWriter`` the handler created."""
        if self._own_writer and self.summary_writer is not None:
            self.summary_writer.close()
            self.summary_writer, self._own_writer = None, False

    # helpers ----------------------------------------------------------------------------------------------------

    def _active(self, engine: Engine) -> bool:
        count = engine.state.epoch if self.epoch_level else engine.state.iteration
        return count % self.interval == 0

    def _selected(self, name: str) -> bool:
        if self.max_cases is not None and self._count >= self.max_cases:
            return False
        if self.cases is None:
            return True
        return bool(self.cases(name)) if callable(self.cases) else name in self.cases

    def _case_name(self, item: torch.Tensor, index: int, engine: Engine) -> str:
        """The sanitised case name from ``filename_or_obj``, unique within the epoch."""
        meta = item.meta if isinstance(item, MetaTensor) else {}
        source = meta.get("filename_or_obj")
        rank, world = _rank_and_world()
        fallback = f"case_it{engine.state.iteration}_{index}" + (f"_rank{rank}" if world > 1 else "")
        name = safe_case_name(meta, default=fallback)
        source = str(source) if source else fallback
        if self._sources.setdefault(name, source) != source:  # two sources with one base name
            name = f"{name}_{hashlib.sha1(source.encode()).hexdigest()[:8]}"
            self._sources.setdefault(name, source)
        return name

    def _folder(self, engine: Engine) -> str:
        if self.output_dir is None:
            raise ValueError("No output_dir.")
        if self.epoch_subdir:
            return os.path.join(self.output_dir, f"epoch_{engine.state.epoch:04d}")
        return self.output_dir

    def _case_files(self, name: str, engine: Engine) -> dict[tuple[str, int, str], str]:
        """The files saved for a case: ``{(layer, class, extension): path}``."""
        if self.output_dir is None:
            return {}
        folder = self._folder(engine)
        extensions = ([".nii.gz"] if self.save_nifti else []) + ([".png"] if self.save_png else [])
        method = safe_token(self.method_name)
        return {
            (layer, c, ext): safe_path(folder, f"{name}_cam_{method}_{safe_token(layer)}_class{c}{ext}")
            for layer in self.layer_list
            for c in self.classes
            for ext in extensions
        }

    def _row(self, name: str, engine: Engine, layer: str, class_index: int, status: str, error: str = "") -> dict:
        row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
        row.update(case=name, epoch=engine.state.epoch, layer=layer, method=self.method_name, status=status)
        row.update({"class": class_index, "error": error})
        return row

    def _case_rows(self, name: str, engine: Engine, status: str, error: str = "") -> list[dict[str, Any]]:
        return [self._row(name, engine, layer, c, status, error) for layer in self.layer_list for c in self.classes]

    def _fail(self, name: str, error: Exception, engine: Engine) -> None:
        if self.on_error == OnError.RAISE:
            raise RuntimeError(f"SegCAMHandler: case {name!r} failed: {type(error).__name__}: {error}") from error
        message = f"{type(error).__name__}: {error}".replace("\n", " ")
        self.failed[name] = message
        self.rows = [row for row in self.rows if row["case"] != name]
        self.rows += self._case_rows(name, engine, "failed", message)
        self.logger.warning(f"SegCAMHandler: skipping case {name!r}: {message}")

    def _compute_case(self, index, name, item, pred, label, engine) -> _Case:
        if self.segcam is None:
            raise RuntimeError("SegCAMHandler is not attached to an engine.")
        item_pred = region_source(pred[index : index + 1], self.multi_label) if pred is not None else None
        item_label = label[index : index + 1].detach() if label is not None else None
        if isinstance(item_label, MetaTensor):
            item_label = item_label.as_tensor()
        cams = self.segcam(item[None], classes=self.classes, region=self.region, pred=item_pred, label=item_label)
        per_layer = {None: cams.map} if self.layer_names is None else dict(cams)
        layers = {key: _on_grid(value, item) for key, value in per_layer.items()}
        if self.layer_names is not None:
            layers = {layer: layers[layer] for layer in self.layer_names}
        region = self._region(item, item_pred, item_label)
        case = _Case(index, name, item.detach(), layers, region)
        for layer, cam in layers.items():
            stats = self._stats(cam, region, item_label)
            for j, c in enumerate(self.classes):
                row = self._row(name, engine, layer if layer is not None else self.layer_list[0], c, "ok")
                row.update({key: values[j] for key, values in stats.items()})
                case.rows.append(row)
        return case

    def _region(self, item, item_pred, item_label) -> torch.Tensor | None:
        """The explained region ``(n_classes, *spatial)`` (bool), or ``None`` when it cannot be built here."""
        region = as_region(self.region)
        if region.needs_prediction and item_pred is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weights = region_weights(
                region, item_pred, self.classes, item.shape[1:], 1, item_label, self.multi_label, device="cpu",
                warn_empty=False,
            )  # fmt: skip
        return weights[0].cpu() > 0

    def _stats(self, cam, region, item_label) -> dict[str, list[float]]:
        """Per-class statistics of one layer's CAM ``(n, *spatial)``."""
        flat = cam.as_tensor().detach().float().cpu().flatten(1)
        batch_cam = flat.view(1, *cam.shape).float()
        nan = [math.nan] * len(self.classes)
        stats = {
            "max": flat.max(1).values.tolist(),
            "mean": flat.mean(1).tolist(),
            "std": flat.std(1, unbiased=False).tolist(),
            "region_voxels": nan,
            "relevance_mass_region": nan,
            "relevance_mass_label": nan,
            "pointing_game_label": nan,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # maps without positive energy score 0 (recorded as such)
            if region is not None:
                stats["region_voxels"] = region.flatten(1).sum(1).tolist()
                stats["relevance_mass_region"] = relevance_mass(batch_cam, region[None])[0].tolist()
            if item_label is not None:
                label = item_label.cpu()
                if label.shape[1] == 1:
                    mask = torch.cat([label == c for c in self.classes], dim=1)
                else:
                    mask = label[:, list(self.classes)] > 0.5
                stats["relevance_mass_label"] = relevance_mass(batch_cam, mask)[0].tolist()
                stats["pointing_game_label"] = pointing_game(batch_cam, mask)[0].tolist()
        return stats

    def _save_case(self, case: _Case, engine: Engine) -> dict[tuple[str, int], list[str]]:
        """Write a case's NIfTI/PNG files and TensorBoard images; returns the files per (layer, class)."""
        files: dict[tuple[str, int], list[str]] = {}
        paths = self._case_files(case.name, engine)
        post = _postprocessed(engine.state.output, case.index, self.output_keys)
        step = self.global_step_transform(engine)
        for layer, cam in case.cams.items():
            layer_name = layer if layer is not None else self.layer_list[0]
            saved = post.get(layer, cam)
            for j, c in enumerate(self.classes):
                written = files.setdefault((layer_name, c), [])
                region = None if case.region is None else case.region[j]
                if self.output_dir is not None and self.save_nifti:
                    path = paths[(layer_name, c, ".nii.gz")]
                    save_nifti_atomic(saved[j : j + 1], path)  # path: already confined by safe_path
                    written.append(os.path.relpath(path, self.output_dir))
                if self.output_dir is not None and self.save_png:
                    path = paths[(layer_name, c, ".png")]
                    title = f"{case.name} {self.method_name} {layer_name} class {c}"
                    save_figure(plot_orthogonal_slices(case.image[0], cam[j], region=region, title=title), path)
                    written.append(os.path.relpath(path, self.output_dir))
                writer = self._writer()
                if writer is not None:
                    tag = f"segcam/{case.name}/{layer_name}/class{c}"
                    log_cam_to_tensorboard(writer, tag, case.image[0], cam[j], region=region, step=step)
        return files

    def _writer(self) -> Any:
        if self.summary_writer is None and self.tensorboard_dir is not None:
            rank, world = _rank_and_world()
            suffix = f".rank{rank}" if world > 1 else ""
            self.summary_writer = SummaryWriter(log_dir=os.fspath(self.tensorboard_dir), filename_suffix=suffix)
            self._own_writer = True
        return self.summary_writer

    def _merge(self, rows: list[dict[str, Any]], engine: Engine) -> list[dict[str, Any]]:
        """Drop duplicate rows (sampler padding), restore resumed cases' rows from the existing CSV, sort."""
        unique: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in rows:
            unique.setdefault((str(row["case"]), str(row["layer"]), str(row["class"])), row)
        if self.resume and self.csv_name is not None:
            previous = _read_csv(safe_path(self._folder(engine), self.csv_name))
            for key, row in unique.items():
                if row["status"] == "resumed" and key in previous:
                    unique[key] = previous[key]
        return [unique[key] for key in sorted(unique)]


def _on_grid(cam: torch.Tensor, item: torch.Tensor) -> MetaTensor:
    """The item's CAM ``(n, *spatial)`` (batch dim dropped) with the item's metadata."""
    value = cam.as_tensor() if isinstance(cam, MetaTensor) else cam
    out = MetaTensor(value[0].detach())
    return out.copy_meta_from(item) if isinstance(item, MetaTensor) else out


def _postprocessed(output: Any, index: int, keys: dict[str | None, str]) -> dict[str | None, MetaTensor]:
    """The CAMs of item ``index`` as the engine's postprocessing left them (decollated ``MetaTensor`` values)."""
    if not isinstance(output, list) or index >= len(output) or not isinstance(output[index], dict):
        return {}
    return {layer: output[index][key] for layer, key in keys.items() if isinstance(output[index].get(key), MetaTensor)}


def _read_csv(path: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Rows of an existing CSV by (case, layer, class), summary rows excluded."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get("status") not in ("summary", None)]
    return {(row["case"], row["layer"], row["class"]): row for row in rows}


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``mean`` and ``std`` rows per (layer, class) over the cases with status ``ok``."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault((str(row["layer"]), str(row["method"]), str(row["class"])), []).append(row)
    summary = []
    for (layer, method, class_index), members in sorted(groups.items()):
        for stat, reduce in (("mean", np.nanmean), ("std", np.nanstd)):
            row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
            row.update(case=stat, layer=layer, method=method, status="summary", n=len(members))
            row["class"] = class_index
            for column in STAT_COLUMNS:
                values = np.array([_as_float(member[column]) for member in members], dtype=float)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no label) stay NaN
                    row[column] = float(reduce(values)) if values.size else math.nan
            summary.append(row)
    return summary


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
