# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Whole-volume Seg-CAMs: :py:class:`SegCAM`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..utils.enums import CAMTarget
from .capture import ActivationCapture
from .engine import (
    CAMEngine,
    check_activations,
    check_classes,
    check_image,
    check_output,
    layer_gradients,
    network_spatial_dims,
    select_output,
    upsample,
)
from .layers import unwrap_network
from .methods import CAMRule, ScoreCAMRule
from .regions import as_region, region_cotangent, region_weights

__all__ = ["SegCAM"]


class SegCAM(CAMEngine):
    """Volumetric Seg-CAMs of a segmentation network on whole volumes.

    One forward pass captures the requested layers, and one vector-Jacobian product per class (``autograd.grad`` of
    the logits with the region's cotangent, with respect to the activations only) gives the gradients of every layer.
    The network's train/eval state and ``requires_grad`` flags are restored and every hook removed afterwards, also
    under an outer ``torch.no_grad()`` (MONAI evaluators) and when something raises.

    Args:
        network: the segmentation network, on the device to compute on (wrappers such as DDP are unwrapped).
        layers: a layer name (``named_modules()`` name, optionally with a ``[index]`` selector for tuple outputs) or
            a preset (``"pre_head"``, ``"bottleneck"``, ``"encoder.N"``, ``"decoder.N"``), or a list of them.
        method: ``"gradcam"``, ``"hirescam"``, ``"xrescam"``, ``"gradcampp"``, ``"xgradcam"``, ``"layercam"``,
            ``"eigencam"``, ``"scorecam"``, or a :py:class:`~monai_segcam.cam.methods.CAMRule`.
        target: explain the ``"logits"`` or the ``"probabilities"`` (softmax; sigmoid with ``multi_label``).
        relu: apply ReLU to the upsampled map (keep positive evidence). Defaults to True.
        multi_label: the network has independent sigmoid outputs (prediction = logit > 0).
        output_selector: picks the logits from a tuple/dict network output (index, key or callable).
        scorecam_batch_size: masked forward passes per batch for ``"scorecam"``.
        method_kwargs: options of the method, e.g. ``pool_size=2, pool_mode="max"`` for ``"xrescam"``.

    Returns (when called):
        a ``MetaTensor`` ``(B, len(classes), *spatial)`` on the input's voxel grid carrying the input's metadata, or a
        dict ``{layer: MetaTensor}`` when ``layers`` is a list. Maps are raw (not normalised): see
        :py:func:`monai_segcam.normalize_cam`.

    Example:
        .. code-block:: python

            cam = SegCAM(network, layers="pre_head", method="hirescam")
            maps = cam(image, classes=[1, 2], region="pred")  # (B, 2, *spatial)
    """

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str] = "pre_head",
        method: str | CAMRule = "hirescam",
        target: str = "logits",
        relu: bool = True,
        multi_label: bool = False,
        output_selector: int | str | Callable[[Any], torch.Tensor] | None = None,
        scorecam_batch_size: int = 8,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(network, layers, method, target, relu, multi_label, output_selector, **method_kwargs)
        self.scorecam_batch_size = scorecam_batch_size

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.network.parameters()), torch.device("cpu"))

    def _explain(self, image, classes, region, pred, label):
        x = check_image(image, network_spatial_dims(self.network)).to(self.device)
        region = as_region(region)
        with torch.enable_grad(), ActivationCapture(self.network, self.layers, self.rule.needs_gradients) as capture:
            logits = select_output(unwrap_network(self.network)(x), self.output_selector)
            check_activations(capture, self.layers)
            check_output(logits, self.layers)
            if tuple(logits.shape[2:]) != tuple(x.shape[2:]):
                raise ValueError(
                    f"The network output grid {tuple(logits.shape[2:])} differs from the input grid "
                    f"{tuple(x.shape[2:])}; CAMs are defined on the input grid of a segmentation network."
                )
            classes = check_classes(classes, logits.shape[1])
            source = logits.detach() if pred is None else torch.as_tensor(pred).to(self.device)
            if pred is not None:
                check_output(source, self.layers, "pred")
            weights = region_weights(
                region, source, classes, x.shape[2:], x.shape[0], label, self.multi_label, device=self.device
            )
            if isinstance(self.rule, ScoreCAMRule):
                raws = self._score_cam(x, capture, weights, classes)
            elif self.rule.needs_gradients:
                raws = self._gradient_cam(logits, capture, weights, classes)
            else:
                raws = {layer.key: self.rule(capture.activations[layer.key], None) for layer in self.layers}
        maps = {key: upsample(raw, x.shape[2:]).to(image.device) for key, raw in raws.items()}
        return maps, weights.to(image.device), None

    def _gradient_cam(self, logits, capture, weights, classes) -> dict[str, torch.Tensor]:
        raws: dict[str, list[torch.Tensor]] = {layer.key: [] for layer in self.layers}
        todo = [i for i in range(len(classes)) if weights[:, i].any()]
        for i in range(len(classes)):
            if i not in todo:
                for layer in self.layers:
                    acts = capture.activations[layer.key]
                    raws[layer.key].append(acts.new_zeros((acts.shape[0], 1, *acts.shape[2:])))
                continue
            cotangent = region_cotangent(logits.detach(), weights[:, i : i + 1], classes[i], self.target, self.multi_label)
            grads = layer_gradients(logits, capture, self.layers, cotangent, retain_graph=i != todo[-1])
            for layer, grad in zip(self.layers, grads):
                raws[layer.key].append(self.rule(capture.activations[layer.key].detach(), grad))
        return {key: torch.cat(per_class, dim=1) for key, per_class in raws.items()}

    def _score_cam(self, x, capture, weights, classes) -> dict[str, torch.Tensor]:
        """Score-CAM: softmax over channels of the region's mean score on the input masked by each upsampled,
        min-max normalised channel (Wang et al. 2020), with batched masked forward passes."""
        activations = {layer.key: capture.activations[layer.key] for layer in self.layers}
        region_size = weights.flatten(2).sum(-1).clamp_min(1e-12)
        raws = {}
        for key, acts in activations.items():
            scores = []
            for start in range(0, acts.shape[1], self.scorecam_batch_size):
                masks = upsample(acts[:, start : start + self.scorecam_batch_size], x.shape[2:])
                flat = masks.flatten(2)
                low, high = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
                masks = ((flat - low) / (high - low).clamp_min(1e-12)).view_as(masks)
                masked = (x[:, None] * masks[:, :, None]).flatten(0, 1)
                capture.reset()
                with torch.no_grad():
                    out = select_output(unwrap_network(self.network)(masked), self.output_selector)
                out = out.view(x.shape[0], -1, *out.shape[1:])
                if self.target == CAMTarget.PROBABILITIES:
                    out = torch.sigmoid(out) if self.multi_label else torch.softmax(out, dim=2)
                picked = out[:, :, list(classes)]  # (B, k, n, *spatial)
                scores.append((picked * weights[:, None]).flatten(3).sum(-1) / region_size[:, None])
            channel_scores = torch.cat(scores, dim=1)  # (B, K, n)
            per_class = []
            for i in range(len(classes)):
                channel_weights, _ = self.rule.weights((channel_scores[..., i],), 0)
                per_class.append(self.rule.combine(acts, channel_weights))
            raws[key] = torch.cat(per_class, dim=1)
        return raws
