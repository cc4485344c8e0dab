# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Checks and helpers shared by the CAM engines: input/output validation, upsampling."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.utils import ensure_tuple

from .layers import ResolvedLayer

__all__ = [
    "all_finite",
    "network_spatial_dims",
    "check_image",
    "check_classes",
    "check_contrast",
    "requested_classes",
    "tensor_sum",
    "upsample",
    "check_activations",
    "check_output",
]


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
        if spatial_dims is None:
            raise ValueError(f"image must be batch-first (B, C, *spatial), got shape {tuple(image.shape)}.")
        raise ValueError(
            f"this network is {spatial_dims}D: give a {spatial_dims}D volume, batch-first (B, C) + {spatial_dims} "
            f"spatial dims; got shape {tuple(image.shape)} ({image.ndim - 2} spatial dims)."
        )
    image = image.as_tensor() if isinstance(image, MetaTensor) else image
    image = image.detach()
    if not all_finite(image):
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(
            f"image contains NaN or Inf values ({bad}); a CAM of a non-finite input is meaningless: replace them "
            "(e.g. torch.nan_to_num) first."
        )
    return image if image.is_floating_point() else image.float()


def requested_classes(classes: int | Sequence[int] | str) -> tuple[int, ...] | str:
    """The classes a front door was given: ``"all"`` (every output channel, known once the network ran) or a tuple of
    class indices.

    Example:
        >>> requested_classes("all"), requested_classes(2), requested_classes([1, 3])
        ('all', (2,), (1, 3))
    """
    given = ensure_tuple(classes)
    if "all" in given:
        if len(given) > 1:
            raise ValueError(f"classes={list(given)}: 'all' (every output channel) stands alone.")
        return "all"
    if any(isinstance(c, str) for c in given):
        raise ValueError(f"classes={list(given)}: give class indices or 'all' (every output channel).")
    return tuple(int(c) for c in given)


def check_classes(classes: int | Sequence[int] | str, num_channels: int) -> tuple[int, ...]:
    """Requested classes as a tuple (``"all"``: every output channel), each checked against the network's output
    channels."""
    requested = requested_classes(classes)
    classes = tuple(range(num_channels)) if isinstance(requested, str) else requested
    if not classes:
        raise ValueError("classes is empty: request at least one class index.")
    bad = [c for c in classes if not 0 <= c < num_channels]
    if bad:
        raise ValueError(
            f"Class index {bad} out of range: the network has {num_channels} output channels (valid classes "
            f"0-{num_channels - 1})."
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {list(classes)} has duplicates.")
    return classes


def check_contrast(contrast: int | None, classes: Sequence[int], num_channels: int) -> int | None:
    """The contrast class ``c2`` checked against the network's output channels and the explained classes.

    Example:
        >>> check_contrast(0, (1, 2), 3), check_contrast(None, (1,), 3)
        (0, None)
    """
    if contrast is None:
        return None
    contrast = int(contrast)
    if not 0 <= contrast < num_channels:
        raise ValueError(f"contrast class {contrast} out of range: the network has {num_channels} output channels.")
    if contrast in classes:
        raise ValueError(
            f"contrast class {contrast} is also explained (classes {list(classes)}): its contrast with itself is 0; "
            "explain other classes or choose another contrast."
        )
    return contrast


def tensor_sum(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of one or more tensors (broadcast), e.g. of the terms' maps."""
    return functools.reduce(torch.add, tensors)


def upsample(raw: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear upsampling with ``align_corners=False``, like MONAI's ``default_upsampler``."""
    if tuple(raw.shape[2:]) == tuple(spatial_size):
        return raw
    mode = ("linear", "bilinear", "trilinear")[len(spatial_size) - 1]
    return F.interpolate(raw, size=tuple(spatial_size), mode=mode, align_corners=False)


def check_activations(capture: Any, layers: Sequence[ResolvedLayer]) -> None:
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
