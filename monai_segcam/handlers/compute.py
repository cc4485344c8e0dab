# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The compute handler: Seg-CAMs of an evaluator's batch at ``FORWARD_COMPLETED``, into ``engine.state.output``, and
the cases (:py:class:`CAMCase`) the saver, statistics and TensorBoard handlers read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from monai.utils import IgniteInfo, StrEnum, ensure_tuple, look_up_option, min_version, optional_import
from torch import nn

from ..cam import Region
from ..cam.result import as_image_map
from ..explainers import ExplainRequest
from ..outputs import CaseNamer, cam_output_keys, source_meta
from ..transforms.array import ComputeSegCAM

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["SegCAMComputeHandler", "CAMCase", "OnError", "fail_case", "gather", "output_item"]


class OnError(StrEnum):
    """What the handlers do when a case fails: ``"raise"`` (naming the case) or ``"skip"`` (record the case and its
    error in the CSV and :py:attr:`SegCAMHandler.failed`, and continue)."""

    RAISE = "raise"
    SKIP = "skip"


@dataclass
class CAMCase:
    """One case of a batch, from :py:class:`SegCAMComputeHandler` to the saver, statistics and TensorBoard handlers:
    its position in the batch, name, epoch, status (``"ok"``, ``"failed"`` with an ``error``, or ``"resumed"``: its
    outputs exist), network input ``image`` ``(C, *spatial)``, maps per layer ``cams`` (``MetaTensor``
    ``(n_classes, *spatial)`` on the network input grid with the image's metadata), explained ``region`` per class
    (bool), ``label`` as the engine output holds it, the ``files`` written per ``(layer, class)``, ``named_by``:
    the batch key whose source file named the case when the image has no source-file metadata of its own, and the
    ``classes`` explained (the handler's, or the case's prompt), and the ``structure_rows`` of its structure table
    when the saver wrote one."""

    index: int
    name: str
    epoch: int
    status: str = "ok"
    error: str = ""
    image: torch.Tensor | None = None
    cams: dict[str, MetaTensor] = field(default_factory=dict)
    region: torch.Tensor | None = None
    label: Any = None
    files: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    named_by: str | None = None
    classes: tuple[int, ...] = ()
    structure_rows: list[dict[str, Any]] = field(default_factory=list)


def gather(items: Sequence[Any]) -> list[Any]:
    """The picklable ``items`` of every rank, in rank order, on every rank (``items`` outside ``torch.distributed``).

    Example:
        .. code-block:: python

            rows = gather(self.rows)  # every rank's rows, on every rank
    """
    return [item for part in idist.all_gather(list(items)) for item in part]  # a list: gathered as one object


def output_item(output: Any, index: int, key: str | None) -> Any:
    """Item ``index`` of ``key`` in an engine output: a decollated list of dicts, or a batch-first dict."""
    if key is None:
        return None
    if isinstance(output, list):
        return output[index].get(key) if index < len(output) and isinstance(output[index], Mapping) else None
    value = output.get(key) if isinstance(output, Mapping) else None
    if not isinstance(value, torch.Tensor) or not getattr(value, "is_batch", True):  # a MetaTensor says if it is
        return None
    return value[index] if index < len(value) else None


def fail_case(case: CAMCase, error: Exception, on_error: str, logger: logging.Logger) -> None:
    """Apply the error policy to a failed case: raise naming it (``"raise"``), or mark it failed and log it."""
    if look_up_option(on_error, OnError) == OnError.RAISE:
        raise RuntimeError(f"SegCAMHandler: case {case.name!r} failed: {type(error).__name__}: {error}") from error
    case.status, case.error = "failed", f"{type(error).__name__}: {error}".replace("\n", " ")
    case.cams, case.files = {}, {}
    logger.warning(f"SegCAMHandler: skipping case {case.name!r}: {case.error}")


class SegCAMComputeHandler:
    """Seg-CAMs at ``IterationEvents.FORWARD_COMPLETED`` of a ``SupervisedEvaluator``, from its prediction, into
    ``engine.state.output`` (see :py:class:`SegCAMHandler`), and the batch's :py:meth:`cases` for the saver,
    statistics and TensorBoard handlers. Cases are named after the image's source file, or the first loaded key's
    when the image has none (several loaded images concatenated by a bundle).

    The saver, statistics and TensorBoard handlers read their settings (method, layer keys, classes, keys, error
    policy, interval, logger) from it: it is the one settings object of the handlers.

    Args:
        network, layers, method, classes, region, inferer, cam_key, image_key, pred_key, label_key, output_transform,
        interval, epoch_level, cases, max_cases, on_error, name, amp, cam_kwargs: as for :py:class:`SegCAMHandler`.
        done: ``(case name, engine) -> bool``: the case's outputs exist already (resume); it is not computed again.

    Example:
        .. code-block:: python

            SegCAMComputeHandler(layers="pre_head", classes=1).attach(evaluator)  # evaluator.state.output["cam"]
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
        output_transform: Callable[[Any], tuple[Any, Any, Any]] | None = None,
        interval: int = 1,
        epoch_level: bool = True,
        cases: Sequence[str] | Callable[[str], bool] | None = None,
        max_cases: int | None = None,
        on_error: str = OnError.RAISE,
        done: Callable[[str, Engine], bool] | None = None,
        name: str | None = None,
        amp: bool | None = None,
        **cam_kwargs: Any,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be a positive integer, got {interval}.")
        if max_cases is not None and max_cases < 0:
            raise ValueError(f"max_cases must be None or non-negative, got {max_cases}.")
        self.network, self.inferer = network, inferer
        self.cam_kwargs = {"layers": layers, "method": method, **cam_kwargs}
        request = ExplainRequest(method=method, layers=layers, classes=tuple(ensure_tuple(classes)), region=region)
        self.output_keys = cam_output_keys(cam_key, request.result_layers)
        self.layers = list(self.output_keys)
        self.method = request.method_name
        self.classes = request.classes
        self.region = region
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.output_transform = output_transform or self._from_output
        self.interval, self.epoch_level = interval, epoch_level
        self.case_filter, self.max_cases = cases, max_cases
        self.on_error = look_up_option(on_error, OnError)
        self.done, self.amp = done, amp
        self.multi_label = bool(cam_kwargs.get("multi_label", False))
        self.logger = logging.getLogger(name or __name__)
        self.cam: ComputeSegCAM | None = None
        self.batch: list[CAMCase] = []
        self._names = CaseNamer()
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Register the handler's events on ``engine``; the CAM engine is built at ``STARTED`` (workflows attach
        handlers before they set their ``network`` and ``inferer``)."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def cases(self, engine: Engine) -> list[CAMCase]:
        """The cases of the current batch (the ``source`` of the saver, statistics and TensorBoard handlers)."""
        return self.batch

    def active(self, engine: Engine) -> bool:
        """Whether this epoch (``epoch_level``) or iteration is one of every ``interval``."""
        count = engine.state.epoch if self.epoch_level else engine.state.iteration
        return count % self.interval == 0

    def started(self, engine: Engine) -> None:
        """``STARTED``: build the CAM engine from the engine's network, inferer and ``amp`` (unless given)."""
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if not isinstance(network, nn.Module):
            raise ValueError("SegCAMHandler needs a network: pass `network=` or attach it to an engine with one.")
        inferer = self.inferer if self.inferer is not None else getattr(engine, "inferer", None)
        amp, precision = self.amp, {}
        if amp is None:  # as the evaluator predicts: MONAI's evaluators autocast CUDA operations only
            on_cuda = any(p.device.type == "cuda" for p in network.parameters())
            amp = bool(getattr(engine, "amp", False)) and on_cuda
            dtype = (getattr(engine, "amp_kwargs", None) or {}).get("dtype") if amp else None
            precision = {"amp_dtype": dtype} if dtype is not None else {}
        if self.cam is None or self.cam.network is not network or self.cam.request.options.get("amp") != amp:
            kwargs = {"classes": self.classes, "region": self.region, "amp": amp, **precision, **self.cam_kwargs}
            self.cam = ComputeSegCAM(network, inferer=inferer, **kwargs)

    def epoch_started(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: forget the previous epoch's case names and count."""
        self.batch, self._count = [], 0
        self._names.reset()

    def __call__(self, engine: Engine) -> None:
        """``FORWARD_COMPLETED``: the CAMs of the batch's selected cases, into ``engine.state.output``."""
        self.batch = []
        if not self.active(engine):
            return
        image, pred, label = self.output_transform(engine.state.output)
        for i in range(image.shape[0]):
            name, named_by = self._case_name(image[i], i, engine)
            case = CAMCase(i, name, engine.state.epoch, named_by=named_by)
            if not self._selected(case.name):
                continue
            self._count += 1
            self.batch.append(case)
            if self.done is not None and self.done(case.name, engine):
                case.status = "resumed"
                continue
            try:
                self._compute(case, image[i], pred, label, engine.state.output)
            except Exception as error:  # recorded or re-raised with the case name
                fail_case(case, error, self.on_error, self.logger)
        if len(self.batch) == image.shape[0] and all(case.status == "ok" for case in self.batch):
            output: Any = engine.state.output
            for layer, key in self.output_keys.items():
                output[key] = as_image_map(torch.stack([case.cams[layer] for case in self.batch]), image)

    def _from_output(self, output: Any) -> tuple[Any, Any, Any]:
        if not isinstance(output, Mapping) or self.image_key not in output:
            raise KeyError(
                f"SegCAMHandler expects engine.state.output to be a dict with {self.image_key!r} at FORWARD_COMPLETED "
                "(a SupervisedEvaluator's output); check image_key or give output_transform."
            )
        pred = output.get(self.pred_key) if self.pred_key is not None else None
        return output[self.image_key], pred, output.get(self.label_key) if self.label_key is not None else None

    def _selected(self, name: str) -> bool:
        if self.max_cases is not None and self._count >= self.max_cases:
            return False
        if self.case_filter is None:
            return True
        return bool(self.case_filter(name)) if callable(self.case_filter) else name in self.case_filter

    def _case_name(self, item: torch.Tensor, index: int, engine: Engine) -> tuple[str, str | None]:
        """The case name from the source file's metadata, unique within the epoch, and the key that named it."""
        named_by, meta = source_meta(item, getattr(engine.state, "batch", None), index, skip=[self.label_key])
        rank = f"_rank{idist.get_rank()}" if idist.get_world_size() > 1 else ""
        fallback = f"case_it{engine.state.iteration}_{index}{rank}"
        return self._names(meta, default=fallback), named_by

    def _compute(self, case: CAMCase, item: torch.Tensor, pred: Any, label: Any, output: Any = None) -> None:
        """The case's CAMs by the transform's path (:py:meth:`ComputeSegCAM.explain`), on the item's grid; a label
        on another grid is not given to the engine (only label regions need it, and they then say so). An explainer
        with ``prompt_arguments(output, index)`` (a promptable model's) gets the case's prompt from the engine's
        output."""
        if self.cam is None:
            raise RuntimeError("SegCAMHandler is not attached to an engine.")
        case.label = label[case.index] if isinstance(label, (torch.Tensor, list, tuple)) else label
        usable = isinstance(case.label, torch.Tensor) and tuple(case.label.shape[1:]) == tuple(item.shape[1:])
        item_pred = pred[case.index] if pred is not None else None
        prompts = getattr(self.cam.engine, "prompt_arguments", None)
        prompt = prompts(output, case.index) if callable(prompts) else None
        truth = case.label.detach() if usable else None
        case.cams, case.region, case.classes = self.cam.explain(item, item_pred, truth, prompt)
        case.image = item.detach()
