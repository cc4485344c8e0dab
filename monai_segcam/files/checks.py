# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What a file must be for a network, checked before anything runs on it: every message names the file, says what is
wrong and what to do (a 2D image for a 3D network, NaN/Inf voxels, the wrong number of channels, a volume, or a
resampling of it, smaller than the network's coarsest stage, label values that are no class, classes that are no
output)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cam.engine import network_spatial_dims
from ..cam.layers import unwrap_network
from ..cam.roles import discover_roles

__all__ = [
    "check_volume",
    "check_network_input",
    "check_label_values",
    "check_classes_of",
    "output_classes",
    "network_minimum",
    "spacing_of",
]


def spacing_of(affine: Any) -> tuple[float, ...]:
    """The voxel sides (mm) of a voxel-to-world ``affine``, the lengths of its columns.

    Example:
        >>> spacing_of(np.diag([0.5, 0.5, 2.0, 1.0]))
        (0.5, 0.5, 2.0)
    """
    matrix = np.asarray(torch.as_tensor(affine).cpu().numpy() if isinstance(affine, torch.Tensor) else affine, float)
    return tuple(float(v) for v in np.linalg.norm(matrix[:-1, :-1], axis=0))


def _mm(values: Sequence[float]) -> str:
    return " × ".join(f"{v:.3g}" for v in values) + " mm"


def check_volume(image: torch.Tensor, path: str, network: nn.Module | None = None) -> None:
    """Refuse a file whose image has the wrong number of spatial dimensions for ``network`` or non-finite voxels.

    Args:
        image: the image as read, channel first ``(C, *spatial)``.
        path: the file (named in the messages).
        network: the network (its first convolution tells its dimensions); ``None`` skips that check.

    Raises:
        ValueError: "this network is 3D: give a 3D volume", or how many voxels are NaN or infinite.

    Example:
        .. code-block:: python

            check_volume(read_image("slice.nii.gz"), "slice.nii.gz", net)  # ValueError: ... this network is 3D ...
    """
    dims = None if network is None else network_spatial_dims(network)
    spatial = tuple(int(s) for s in image.shape[1:])
    if dims is not None and len(spatial) != dims:
        raise ValueError(
            f"{path}: this network is {dims}D: give a {dims}D volume (the file holds a {len(spatial)}D image of "
            f"shape {spatial})."
        )
    values = torch.as_tensor(image)
    if values.is_floating_point():
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            raise ValueError(
                f"{path}: {bad} voxel(s) are NaN or infinite, and a CAM of them is meaningless: replace them (e.g. "
                "numpy.nan_to_num, or the scanner's padding value) and save the file again."
            )


def network_minimum(network: nn.Module) -> tuple[int, ...] | None:
    """The fewest voxels per axis the network's coarsest stage needs to see a whole voxel of the input: the probe's
    size over that stage's, from the traced forward pass of :py:func:`~monai_segcam.cam.roles.discover_roles`
    (cached; ``None`` when the network cannot be traced).

    Example:
        .. code-block:: python

            network_minimum(UNet(3, 1, 3, (8, 16, 32), (2, 2)))  # (4, 4, 4)
    """
    try:
        roles = discover_roles(unwrap_network(network))
    except ValueError:
        return None
    spatial = [stage.shape[2:] for stage in roles.stages if len(stage.shape) == len(roles.probe_shape)]
    if not spatial:
        return None
    probe = roles.probe_shape[2:]
    return tuple(max(1, math.ceil(p / min(s[d] for s in spatial))) for d, p in enumerate(probe))


def check_network_input(
    image: Any, path: str, expected_channels: int | None, minimum: Sequence[int] | None, original: Any
) -> None:
    """Refuse a network input with the wrong number of channels, or with an axis shorter than the network's minimum.

    Args:
        image: the network input ``(C, *spatial)`` (after any preprocessing), with its affine when a ``MetaTensor``.
        path: the file (named in the messages).
        expected_channels: the network's input channels (``None``: not checked).
        minimum: :py:func:`network_minimum` (``None``: not checked).
        original: the image as read: when the preprocessing resampled it, the message names both spacings.

    Raises:
        ValueError: naming the channels, or the shape, the spacing and the minimum.

    Example:
        .. code-block:: python

            check_network_input(preprocessed, "ct.nii.gz", 1, network_minimum(net), read_image("ct.nii.gz"))
    """
    if expected_channels is not None and image.shape[0] != expected_channels:
        raise ValueError(
            f"{path} gives {image.shape[0]} channel(s) but the network expects {expected_channels} (in_channels): give "
            f"a {expected_channels}-channel volume (a 4D file's last axis is read as channels)."
        )
    if minimum is None:
        return
    shape = tuple(int(s) for s in image.shape[1:])
    if all(s >= m for s, m in zip(shape, minimum)):
        return
    need = " × ".join(map(str, minimum))
    own = tuple(int(s) for s in original.shape[1:])
    if shape != own and hasattr(image, "affine") and hasattr(original, "affine"):
        raise ValueError(
            f"{path}: its voxel spacing {_mm(spacing_of(original.affine))} on a {own} grid resamples to a {shape} "
            f"network input ({_mm(spacing_of(image.affine))} voxels), below this network's minimum of {need} voxels: "
            "check the file's affine (the header's pixdim / spacing); it is probably in the wrong unit."
        )
    raise ValueError(
        f"{path}: the volume {shape} is smaller than this network's minimum of {need} voxels: give a larger volume."
    )


def check_label_values(label: torch.Tensor, path: str, num_classes: int | None) -> None:
    """Refuse a label map holding values that are no class of the network (``num_classes`` ``None``: not checked).

    Raises:
        ValueError: naming the values found and the valid ones.

    Example:
        .. code-block:: python

            check_label_values(read_image("label.nii.gz"), "label.nii.gz", 3)  # values 0-2 only
    """
    if num_classes is None:
        return
    values = torch.unique(torch.as_tensor(label).round().long())
    bad = [int(v) for v in values if not 0 <= int(v) < num_classes]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(
            f"label {path} holds the value(s) {shown}, but the network's classes are 0-{num_classes - 1}: give a "
            "label map of the network's class indices (relabel it, e.g. with the bundle's label mapping)."
        )


def output_classes(network: nn.Module, class_names: Mapping[int, str] | None = None) -> int | None:
    """The network's number of output classes without running it: its ``out_channels`` attribute (MONAI's networks
    have one), else the bundle's class names when they number ``0..n-1``; ``None`` when neither tells.

    Example:
        .. code-block:: python

            output_classes(UNet(3, 1, 3, (8, 16), (2,)))  # 3
    """
    count = getattr(network, "out_channels", None)
    if isinstance(count, int) and count > 0:
        return count
    names = dict(class_names or {})
    return len(names) if names and set(names) == set(range(len(names))) else None


def check_classes_of(classes: Sequence[int] | None, num_classes: int | None, class_names: Mapping[int, str]) -> None:
    """Refuse classes that are no output of the network, listing the valid ones with their names.

    Raises:
        ValueError: "class 5 is not an output of this network: its classes are 0 (background), 1 (liver), ...".

    Example:
        .. code-block:: python

            check_classes_of([5], 3, {0: "background", 1: "liver", 2: "tumour"})  # ValueError
    """
    if classes is None or num_classes is None:
        return
    bad = [int(c) for c in classes if not 0 <= int(c) < num_classes]
    if bad:
        valid = ", ".join(f"{c} ({class_names[c]})" if c in class_names else str(c) for c in range(num_classes))
        which = f"classes {', '.join(map(str, bad))} are" if len(bad) > 1 else f"class {bad[0]} is"
        raise ValueError(f"{which} not an output of this network: its classes are {valid}.")
