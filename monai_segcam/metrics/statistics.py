# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Per-case CAM statistics, the same for every front door (handlers, transforms, command line): the map's maximum,
mean and spread, the explained region's size and the CAM's relevance mass inside it, and, when a usable ground truth
is given, relevance mass and pointing game inside the label."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from monai.data import MetaTensor

from .localization import pointing_game, relevance_mass

__all__ = ["STAT_COLUMNS", "cam_statistics", "label_masks"]

STAT_COLUMNS = (
    "max",
    "mean",
    "std",
    "region_voxels",
    "relevance_mass_region",
    "relevance_mass_label",
    "pointing_game_label",
)


def label_masks(
    label: object, classes: Sequence[int], image: torch.Tensor
) -> tuple[torch.Tensor | None, str]:
    """The per-class masks ``(len(classes), *spatial)`` of a ground truth for :py:func:`cam_statistics`, or ``None``
    and the reason the label cannot be used: missing, not a tensor (e.g. a file name that was never loaded), not
    channel first, on another grid than ``image`` (shape, or affine when both carry one), or of another kind (a
    label map with non-integer values, a one-hot label without a channel per class).

    Args:
        label: a label map ``(1, *spatial)`` or one-hot ``(C, *spatial)`` of one case, or anything else.
        classes: the explained class indices.
        image: the case's network input ``(C, *spatial)``, whose grid the label must share.

    Example:
        .. code-block:: python

            masks, reason = label_masks(item["label"], [1, 2], item["image"])
            if masks is None:
                print("no label statistics:", reason)
    """
    grid = tuple(image.shape[1:])
    if label is None:
        return None, "no label was given"
    if not isinstance(label, torch.Tensor):
        return None, f"the label is a {type(label).__name__}, not an image (was it loaded and transformed?)"
    if label.ndim != len(grid) + 1:
        shapes = f"{tuple(label.shape)} vs the image's {tuple(image.shape)}"
        return None, f"the label's shape is not channel first like the image's ({shapes})"
    if tuple(label.shape[1:]) != grid:
        return None, f"the label lies on another grid ({tuple(label.shape[1:])}) than the network input ({grid})"
    if isinstance(label, MetaTensor) and isinstance(image, MetaTensor) and not torch.allclose(
        label.affine.double().cpu(), image.affine.double().cpu(), atol=1e-3
    ):
        return None, "the label's affine differs from the network input's (it was not transformed like the image)"
    values = label.detach().cpu()
    values = values.as_tensor() if isinstance(values, MetaTensor) else values
    if not bool(torch.isfinite(values.float()).all()):
        return None, "the label contains NaN or Inf"
    if values.shape[0] == 1:
        if values.is_floating_point() and not bool((values == values.round()).all()):
            return None, "the label has non-integer values: neither a label map nor a one-hot label"
        return torch.cat([values == c for c in classes]), ""
    if max(classes) >= values.shape[0]:
        return None, f"the one-hot label has {values.shape[0]} channels; classes {list(classes)} do not all fit"
    return values[list(classes)] > 0.5, ""


def cam_statistics(
    cam: torch.Tensor, region: torch.Tensor | None = None, label: torch.Tensor | None = None
) -> list[dict[str, float | int]]:
    """The statistics of one case's map per class: one dict of :py:data:`STAT_COLUMNS` per channel.

    ``max``, ``mean``, ``std`` of the map; ``region_voxels`` and ``relevance_mass_region`` (the share of the map's
    positive energy inside the explained region, :py:func:`~monai_segcam.metrics.relevance_mass`) when ``region`` is
    given; ``relevance_mass_label`` and ``pointing_game_label`` when ``label`` masks are given. Missing values are
    ``nan``; a map without positive energy scores 0.

    Args:
        cam: the map ``(n, *spatial)`` (one channel per class), raw.
        region: the explained region per class ``(n, *spatial)`` (non-zero inside), on the map's grid.
        label: the ground truth per class ``(n, *spatial)`` (see :py:func:`label_masks`), on the map's grid.

    Example:
        .. code-block:: python

            rows = cam_statistics(result["pre_head"][0], region=result.region[0] > 0)
            rows[0]["relevance_mass_region"]  # share of class 0's positive CAM energy inside its region
    """
    value = cam.as_tensor() if isinstance(cam, MetaTensor) else torch.as_tensor(cam)
    flat = value.detach().float().cpu().flatten(1)
    batch = flat.view(1, *value.shape)
    nan = [math.nan] * flat.shape[0]
    stats = {
        "max": flat.max(1).values.tolist(),
        "mean": flat.mean(1).tolist(),
        "std": flat.std(1, unbiased=False).tolist(),
        **dict.fromkeys(STAT_COLUMNS[3:], nan),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # maps without positive energy score 0 (recorded as such)
        if region is not None:
            inside = torch.as_tensor(region).detach().cpu() > 0
            stats["region_voxels"] = inside.flatten(1).sum(1).tolist()
            stats["relevance_mass_region"] = relevance_mass(batch, inside[None])[0].tolist()
        if label is not None:
            mask = torch.as_tensor(label).detach().cpu()[None] > 0
            stats["relevance_mass_label"] = relevance_mass(batch, mask)[0].tolist()
            stats["pointing_game_label"] = pointing_game(batch, mask)[0].tolist()
    return [{column: stats[column][i] for column in STAT_COLUMNS} for i in range(flat.shape[0])]
