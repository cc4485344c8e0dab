# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The base class of the CAM engines: from the explained terms and a rule to a :py:class:`~monai_segcam.CAMResult`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import torch
from monai.utils import look_up_option
from torch import nn

from ..utils.enums import CAMTarget
from .engine import requested_classes
from .methods import CAMRule, get_rule
from .result import CAMResult, as_image_map
from .terms import Terms

__all__ = ["Explainer", "CAMEngine"]

R = TypeVar("R")


class Explainer(Generic[R]):
    """The explainer protocol: called as ``explainer(image, classes, region, pred, label)`` (outside
    ``torch.inference_mode``: CAMs and input gradients need autograd; MONAI evaluators predict in inference mode), it
    says the keys of its result (:py:attr:`result_keys`), its :py:attr:`method_name` and its :py:meth:`settings`, which
    is all a front door needs to know of it.

    Subclasses implement ``_call(image, classes, region, pred, label, contrast=None) -> R`` (their result type;
    ``contrast`` is passed only when given) and the three descriptions.

    Example:
        .. code-block:: python

            class RegionScore(Explainer[torch.Tensor]):  # the region score of the whole-volume prediction
                def __init__(self, net):
                    self.net = net

                def _call(self, image, classes, region, pred, label, contrast=None):
                    logits = self.net(image)
                    weights = region_weights(region, logits, ensure_tuple(classes), image.shape[2:], len(image))
                    return (weights * logits[:, list(ensure_tuple(classes))]).flatten(2).sum(-1)
    """

    def __call__(
        self,
        image: torch.Tensor,
        classes: int | Sequence[int] = 1,  # or "all" (see below)
        region: Any = "pred",
        pred: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        contrast: int | None = None,
    ) -> R:
        """Explain ``classes`` for ``region`` on ``image`` ``(B, C, *spatial)``.

        Args:
            image: the network input, batch first (a ``MetaTensor`` keeps its metadata on the output).
            classes: one class index or several, or ``"all"`` (every output channel); all come from the same forward
                pass(es), and several classes share batched backward passes.
            region: the explained region M per class, on the whole volume (see :py:mod:`monai_segcam.cam.regions`).
            pred: an existing prediction defining prediction-based regions: logits ``(B, C, *spatial)`` (stitched, for
                sliding windows) or a label map ``(B, 1, *spatial)``; it saves the prediction pass of sliding windows.
            label: the ground truth for ``"label"``, ``"fp"`` and ``"fn"`` regions.
            contrast: a class ``c2`` to contrast with: explain ``S = sum_M (y_c - y_c2)`` ("why ``c`` here and not
                ``c2``"), the region's cotangent ``T_c - T_c2``; ``None``: ``S = sum_M y_c``.
        """
        extra = {} if contrast is None else {"contrast": int(contrast)}  # explainers without contrast keep working
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return self._call(image, classes, region, pred, label, **extra)
        return self._call(image, classes, region, pred, label, **extra)

    def _call(
        self, image: torch.Tensor, classes: int | Sequence[int] | str, region: Any, pred: torch.Tensor | None,
        label: torch.Tensor | None, contrast: int | None = None,
    ) -> R:  # fmt: skip
        raise NotImplementedError

    @property
    def result_keys(self) -> tuple[str, ...]:
        """The keys of the result's maps (the layer keys, or ``("input",)`` for maps of the input)."""
        raise NotImplementedError

    @property
    def method_name(self) -> str:
        """The method's name in results, file names and the statistics."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The explainer's settings as JSON values (what a case summary records)."""
        raise NotImplementedError


class CAMEngine(Explainer[CAMResult]):
    """What every CAM engine shares: the explained terms (networks, flips) with their resolved layers, the CAM
    rule, the explained target, and how raw volume maps become the returned :py:class:`~monai_segcam.CAMResult`.

    Subclasses implement ``_explain(image, classes, region, pred, label, contrast) -> (maps, weights, crop,
    prediction)``; calling the engine leaves ``torch.inference_mode`` for the call (CAMs need autograd), zeroes the maps of empty
    regions exactly, applies the ReLU and wraps the maps with the image's metadata.

    Example:
        .. code-block:: python

            class MyEngine(CAMEngine):  # an engine computing maps some other way
                def _explain(self, image, classes, region, pred, label, contrast=None):
                    ...  # -> (maps {layer: (B, n, *grid)}, region weights, crop or None, prediction)

            result = MyEngine(net, "pre_head", "hirescam", "logits", True, False, None)(image, classes=1)
    """

    def __init__(
        self,
        network: nn.Module | Sequence[nn.Module],
        layers: str | Sequence[str],
        method: str | CAMRule,
        target: str,
        relu: bool,
        multi_label: bool,
        output_selector: int | str | Callable[[Any], torch.Tensor] | None,
        flips: Sequence[Sequence[int]] | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
        example_input_shape: Sequence[int] | None = None,
        **method_kwargs: Any,
    ) -> None:
        self.network = network
        self.rule = get_rule(method, **method_kwargs)
        layers = layers if self.rule.layer is None else self.rule.layer  # input attributions explain the input
        self.terms = Terms(network, flips, layers, output_selector, amp, amp_dtype, example_input_shape)
        self.layers = self.terms.layers[0]
        self.target = look_up_option(target, CAMTarget)
        self.relu = relu
        self.multi_label = multi_label
        self.output_selector = output_selector

    def _call(self, image, classes, region, pred, label, contrast=None) -> CAMResult:
        """The CAMs of ``classes`` for ``region`` on ``image``: a :py:class:`~monai_segcam.CAMResult`
        ``{layer: MetaTensor (B, n_classes, *spatial)}`` with the region and prediction used (``result.map`` when one
        layer was requested)."""
        maps, weights, crop, prediction = self._explain(image, classes, region, pred, label, contrast)
        nonempty = weights.flatten(2).any(-1)[(...,) + (None,) * (weights.ndim - 2)]
        out, channels = {}, {}
        for key, value in maps.items():
            per_channel = value.ndim > weights.ndim  # input attributions: (B, n, C, *grid)
            value = value.expand(-1, weights.shape[1], *value.shape[2:]) if value.shape[1] != weights.shape[1] else value
            value = value[(slice(None), *crop) if per_channel else crop] if crop is not None else value
            if not nonempty.all():
                mask = nonempty[:, :, None] if per_channel else nonempty
                value = torch.where(mask.to(value.device), value, torch.zeros_like(value))
            if per_channel:
                channels[key] = as_image_map(value.relu() if self.relu else value, image)
                value = value.sum(2)
            out[key] = as_image_map(value.relu() if self.relu else value, image)
        requested = requested_classes(classes)
        classes = tuple(range(weights.shape[1])) if isinstance(requested, str) else requested
        modules = {layer.key: layer.module_name for layer in self.layers}
        return CAMResult(out, classes, self.rule.method_name, weights, prediction, modules, channels)

    @property
    def result_keys(self) -> tuple[str, ...]:
        """The requested layers' keys, in order."""
        return tuple(layer.key for layer in self.layers)

    @property
    def method_name(self) -> str:
        """The rule's name (:py:attr:`~monai_segcam.cam.CAMRule.method_name`)."""
        return self.rule.method_name

    def settings(self) -> dict[str, Any]:
        """The method, the layers (key -> module name), the target, ReLU and mixed precision."""
        return {"method": self.method_name, "layers": {layer.key: layer.module_name for layer in self.layers},
                "target": str(self.target), "relu": self.relu, "amp": self.terms.amp}  # fmt: skip

    def _explain(
        self, image, classes, region, pred, label, contrast=None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any, Any]:
        """Raw volume maps ``{layer: (B, n or 1, *grid)}`` (input attributions: ``(B, n, C, *grid)`` per input
        channel), region weights ``(B, n, *spatial)``, a crop from ``grid`` to the image grid (``None`` when ``grid``
        is the image grid) and the prediction the region came from; ``contrast``: see :py:meth:`Explainer.__call__`."""
        raise NotImplementedError
