# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Pieces shared by the whole-volume and the sliding-window CAM engines."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.utils import ensure_tuple, look_up_option
from torch import nn

from ..utils.enums import CAMTarget
from .capture import ActivationCapture
from .layers import ResolvedLayer, resolve_layers
from .methods import CAMRule, get_rule
from .selection import select_logits

__all__ = [
    "CAMEngine",
    "select_output",
    "all_finite",
    "network_spatial_dims",
    "check_image",
    "check_classes",
    "upsample",
    "as_output",
    "layer_gradients",
    "check_activations",
    "check_output",
]


def select_output(
    output: Any, selector: int | str | Callable[[Any], torch.Tensor] | None, spatial_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """The segmentation logits from a network output: see :py:func:`~monai_segcam.cam.selection.select_logits`."""
    return select_logits(output, selector, spatial_shape)


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN/Inf, from one float32-accumulated sum (NaN and Inf propagate through it): a
    single reduction instead of ``isfinite(...).all()``, whose element-wise passes cost ~10% of a CAM on CPU."""
    if not tensor.is_floating_point():
        return True
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32 if tensor.element_size() < 4 else tensor.dtype)))


def network_spatial_dims(network: torch.nn.Module) -> int | None:
    """The number of spatial dimensions of the network's first convolution, ``None`` when it has none."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            return len(module.kernel_size)
    return None


def check_image(image: torch.Tensor, spatial_dims: int | None = None) -> torch.Tensor:
    """A detached plain tensor ``(B, C, *spatial)`` with finite values, or a clear error."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (B, C, *spatial), got {type(image).__name__}.")
    if image.ndim < 3 or (spatial_dims is not None and image.ndim != spatial_dims + 2):
        expected = "(B, C, *spatial)" if spatial_dims is None else f"(B, C) + {spatial_dims} spatial dims"
        raise ValueError(f"image must be batch-first {expected}, got shape {tuple(image.shape)}.")
    image = image.as_tensor() if isinstance(image, MetaTensor) else image
    image = image.detach()
    if not all_finite(image):
        raise ValueError("image contains NaN or Inf values; a CAM of a non-finite input is meaningless.")
    return image if image.is_floating_point() else image.float()


def check_classes(classes: int | Sequence[int], num_channels: int) -> tuple[int, ...]:
    """Requested classes as a tuple, each checked against the network's output channels."""
    classes = tuple(int(c) for c in ensure_tuple(classes))
    if not classes:
        raise ValueError("classes is empty: request at least one class index.")
    bad = [c for c in classes if not 0 <= c < num_channels]
    if bad:
        raise ValueError(f"Class index {bad} out of range: the network has {num_channels} output channels.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {list(classes)} has duplicates.")
    return classes


def upsample(raw: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear upsampling with ``align_corners=False``, like MONAI's ``default_upsampler``."""
    if tuple(raw.shape[2:]) == tuple(spatial_size):
        return raw
    mode = ("linear", "bilinear", "trilinear")[len(spatial_size) - 1]
    return F.interpolate(raw, size=tuple(spatial_size), mode=mode, align_corners=False)


def as_output(maps: dict[str, torch.Tensor], image: torch.Tensor, single: bool) -> MetaTensor | dict[str, MetaTensor]:
    """Wrap maps as MetaTensors on the image's grid with the image's metadata (affine, applied operations)."""
    wrapped = {}
    for key, value in maps.items():
        out = MetaTensor(value)
        if isinstance(image, MetaTensor):
            out.copy_meta_from(image)
        wrapped[key] = out
    return next(iter(wrapped.values())) if single else wrapped


def layer_gradients(
    logits: torch.Tensor,
    capture: ActivationCapture,
    layers: Sequence[ResolvedLayer],
    cotangent: torch.Tensor,
    retain_graph: bool,
) -> list[torch.Tensor]:
    """``dS/dA`` for every captured layer from one vector-Jacobian product of the logits with ``cotangent``.

    Only the activations are differentiated (``autograd.grad``), never the parameters. A layer that does not lead to
    the logits gets a zero gradient.
    """
    acts = [capture.activations[layer.key] for layer in layers]
    grads = torch.autograd.grad(logits, acts, cotangent, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads)]


def check_activations(capture: ActivationCapture, layers: Sequence[ResolvedLayer]) -> None:
    """Raise a clear error when a layer was not reached or produced NaN/Inf."""
    for layer in layers:
        if layer.key not in capture.activations:
            raise RuntimeError(f"Layer {layer.key!r} ({layer.module_name}) was not called in the forward pass.")
        if not all_finite(capture.activations[layer.key]):
            raise FloatingPointError(
                f"Layer {layer.key!r} ({layer.module_name}) produced NaN/Inf activations; check the input and weights."
            )


def check_output(output: torch.Tensor, layers: Sequence[ResolvedLayer], what: str = "The network output") -> None:
    """Raise a clear error when the logits (or a given prediction) contain NaN/Inf: a CAM of them would be NaN."""
    if not all_finite(output):
        if what == "pred":
            raise ValueError("pred contains NaN or Inf values; pass finite logits or a label map.")
        names = ", ".join(repr(layer.module_name) for layer in layers)
        raise FloatingPointError(
            f"{what} contains NaN/Inf values while the explained layers ({names}) were finite: a module after them "
            "produced them; check the weights (e.g. a diverged checkpoint) and the input."
        )


class CAMEngine:
    """What the whole-volume and sliding-window engines share: the network, its resolved layers, the CAM rule, the
    explained target, and how raw volume maps become the returned MetaTensors.

    Subclasses implement ``_explain(image, classes, region, pred, label) -> (maps, weights, crop)``; calling the engine
    leaves ``torch.inference_mode`` for the call (CAMs need autograd), zeroes the maps of empty regions exactly,
    applies the ReLU and wraps the maps with the image's metadata.
    """

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str],
        method: str | CAMRule,
        target: str,
        relu: bool,
        multi_label: bool,
        output_selector: int | str | Callable[[Any], torch.Tensor] | None,
        **method_kwargs: Any,
    ) -> None:
        self.network = network
        self.layers = resolve_layers(network, layers)
        self.single_layer = isinstance(layers, str)
        self.rule = get_rule(method, **method_kwargs)
        self.target = look_up_option(target, CAMTarget)
        self.relu = relu
        self.multi_label = multi_label
        self.output_selector = output_selector

    def __call__(
        self,
        image: torch.Tensor,
        classes: int | Sequence[int] = 1,
        region: Any = "pred",
        pred: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
    ) -> MetaTensor | dict[str, MetaTensor]:
        """Compute the CAMs of ``classes`` for ``region`` on ``image`` ``(B, C, *spatial)``.

        Args:
            image: the network input, batch first (a ``MetaTensor`` keeps its metadata on the output).
            classes: one class index or several; all come from the same forward pass(es).
            region: the explained region M per class, on the whole volume (see :py:mod:`monai_segcam.cam.regions`).
            pred: an existing prediction defining prediction-based regions: logits ``(B, C, *spatial)`` (stitched, for
                sliding windows) or a label map ``(B, 1, *spatial)``; it saves the prediction pass of sliding windows.
            label: the ground truth for ``"label"``, ``"fp"`` and ``"fn"`` regions.
        """
        if torch.is_inference_mode_enabled():  # CAMs need autograd: leave inference mode for this call
            with torch.inference_mode(False):
                return self(image, classes, region, pred, label)
        maps, weights, crop = self._explain(image, classes, region, pred, label)
        nonempty = weights.flatten(2).any(-1)[(...,) + (None,) * (weights.ndim - 2)]
        out = {}
        for key, value in maps.items():
            value = value.expand(-1, weights.shape[1], *value.shape[2:]) if value.shape[1] != weights.shape[1] else value
            if not nonempty.all():
                value = torch.where(nonempty, value, torch.zeros_like(value))
            value = value[crop] if crop is not None else value
            out[key] = value.relu() if self.relu else value
        return as_output(out, image, self.single_layer)

    def _explain(self, image, classes, region, pred, label) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
        """Raw volume maps ``{layer: (B, n or 1, *grid)}``, region weights ``(B, n, *grid)`` and a crop to the image
        grid (``None`` when ``grid`` is the image grid)."""
        raise NotImplementedError
