# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""One picture cell: a grey image plane with a CAM colour overlay and a region contour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

__all__ = ["draw_overlay"]

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage


def draw_overlay(
    ax: Axes,
    image: np.ndarray,
    cam: np.ndarray,
    region: np.ndarray | None = None,
    *,
    image_window: Sequence[float],
    cam_limits: Sequence[float],
    aspect: float = 1.0,
    cmap: Any = "jet",
    alpha: float = 0.5,
    contour_color: Any = "white",
) -> AxesImage:
    """Draw one 2D cell on ``ax`` and return the CAM image (the mappable for a colour bar).

    Args:
        ax: matplotlib axes.
        image: 2D grey-level plane, drawn with ``image_window = (low, high)``.
        cam: 2D CAM plane of the same shape, drawn with ``cmap`` over ``cam_limits = (vmin, vmax)`` and
            opacity ``alpha``; non-finite values are transparent.
        region: optional 2D mask of the same shape (non-zero inside), drawn as a contour line when the
            plane cuts its boundary.
        aspect: height / width of one pixel (row spacing / column spacing).
        cmap: colour map of the CAM.
        alpha: opacity of the CAM overlay.
        contour_color: colour of the region contour.

    .. code-block:: python

        from matplotlib.figure import Figure

        ax = Figure().subplots()
        draw_overlay(ax, img2d, cam2d, mask2d, image_window=(0, 1), cam_limits=(0, 1))
    """
    ax.imshow(
        image, cmap="gray", vmin=image_window[0], vmax=image_window[1], aspect=aspect, interpolation="nearest"
    )
    shown = ax.imshow(
        cam, cmap=cmap, alpha=alpha, vmin=cam_limits[0], vmax=cam_limits[1], aspect=aspect, interpolation="nearest"
    )
    if region is not None:
        inside = region != 0
        if inside.any() and not inside.all():
            ax.contour(inside.astype(np.float32), levels=[0.5], colors=[contour_color], linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown
