# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Whole-volume Seg-CAMs: :py:class:`SegCAM`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .methods import CAMRule
from .sliding_window import SlidingWindowSegCAM

__all__ = ["SegCAM"]


class SegCAM(SlidingWindowSegCAM):
    """Volumetric Seg-CAMs of a segmentation network on whole volumes.

    One forward pass captures the requested layers (and gives the prediction the region comes from), and one
    vector-Jacobian product per class (``autograd.grad`` of the logits with the region's cotangent, with respect to
    the activations only) gives the gradients of every layer. It is :py:class:`SlidingWindowSegCAM` with a single
    window covering the volume, on the network's device.
    The network's train/eval state and ``requires_grad`` flags are restored and every hook removed afterwards, also
    under an outer ``torch.no_grad()`` (MONAI evaluators) and when something raises.

    Args:
        network: the segmentation network, on the device to compute on (wrappers such as DDP are unwrapped), or
            several (an ensemble whose logits are averaged).
        layers: a layer name (``named_modules()`` name, optionally with a ``[index]`` selector for tuple outputs) or
            a role (``"pre_head"``, ``"bottleneck"``, ``"encoder.N"``, ``"decoder.N"``), or a list of them.
        method: ``"gradcam"``, ``"hirescam"``, ``"xrescam"``, ``"gradcampp"``, ``"gradcampp_relu"``, ``"xgradcam"``,
            ``"layercam"``, ``"eigencam"``, ``"scorecam"``, or a :py:class:`~monai_segcam.cam.methods.CAMRule`.
        target: explain the ``"logits"`` or the ``"probabilities"`` (softmax; sigmoid with ``multi_label``).
        relu: apply ReLU to the upsampled map (keep positive evidence). Defaults to True.
        multi_label: the network has independent sigmoid outputs (prediction = logit > 0).
        output_selector: picks the logits from a tuple/dict network output (index, key or callable).
        scorecam_batch_size: masked forward passes per batch for ``"scorecam"``.
        flips: test-time flips, sets of spatial axes (see :py:class:`SlidingWindowSegCAM`).
        activation_budget: bytes of activations and graph kept between the passes of global-weight methods.
        amp, amp_dtype: mixed precision, see :py:class:`SlidingWindowSegCAM`.
        method_kwargs: options of the method, e.g. ``pool_size=2, pool_mode="max"`` for ``"xrescam"``,
            ``score_reduction="mean"`` for ``"scorecam"``, ``activation="relu"`` for ``"gradcampp"``.

    Returns (when called):
        a :py:class:`~monai_segcam.CAMResult` ``{layer: MetaTensor (B, len(classes), *spatial)}`` on the input's voxel
        grid carrying the input's metadata (``result.map`` for a single layer), with the region and prediction used.
        Maps are raw (not normalised): see :py:func:`monai_segcam.normalize_cam`.

    Example:
        .. code-block:: python

            cam = SegCAM(network, layers="pre_head", method="hirescam")
            maps = cam(image, classes=[1, 2], region="pred").map  # (B, 2, *spatial)
    """

    def __init__(
        self,
        network: nn.Module | Sequence[nn.Module],
        layers: str | Sequence[str] = "pre_head",
        method: str | CAMRule = "hirescam",
        target: str = "logits",
        relu: bool = True,
        multi_label: bool = False,
        output_selector: int | str | Callable[[Any], torch.Tensor] | None = None,
        scorecam_batch_size: int = 8,
        flips: Sequence[Sequence[int]] | None = None,
        activation_budget: int = 1 << 30,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(
            network, -1, layers, method, target, relu, multi_label=multi_label, output_selector=output_selector,
            scorecam_batch_size=scorecam_batch_size, flips=flips, activation_budget=activation_budget, amp=amp,
            amp_dtype=amp_dtype, **method_kwargs,
        )  # fmt: skip

    @property
    def network_device(self) -> torch.device:
        """The device of the first network's parameters (where the volume is explained)."""
        return next((p.device for p in self.terms.networks[0].parameters()), torch.device("cpu"))

    def _devices(self, x: torch.Tensor) -> tuple[torch.device, torch.device]:
        """Windows run and maps accumulate on the network's device."""
        return self.network_device, self.network_device

    def _explain(self, image, classes, region, pred, label, contrast=None):
        maps, weights, crop, prediction = super()._explain(image, classes, region, pred, label, contrast)
        device = image.device
        moved = None if prediction is None else prediction.to(device)
        return {key: value.to(device) for key, value in maps.items()}, weights.to(device), crop, moved
