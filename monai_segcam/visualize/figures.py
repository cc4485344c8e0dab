# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Figures out of memory: atomic PNG files and RGB arrays (e.g. for TensorBoard)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from monai.utils import optional_import

from ..utils.atomic import atomic_output

FigureCanvasAgg, _ = optional_import("matplotlib.backends.backend_agg", name="FigureCanvasAgg")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure", "figure_to_array"]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float = 100) -> str:
    """Write ``fig`` as a PNG of ``figsize * dpi`` pixels, atomically.

    Written by the package's one atomic writer (:py:func:`~monai_segcam.utils.atomic.atomic_output`): a temporary
    file in the destination folder (created if needed), moved over ``path``, so readers never see a partial file and
    a resumed run's clean-up (:py:func:`~monai_segcam.utils.atomic.remove_stale_temporaries`) recognises a killed
    write's temporary. The file gets mode ``0o644``.

    Args:
        fig: a matplotlib figure.
        path: destination file name.
        dpi: dots per inch.

    Returns:
        the destination path as a string.

    .. code-block:: python

        save_figure(plot_orthogonal_slices(image, cam), "out/case1_cam.png", dpi=150)
    """
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return os.fspath(path)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` at its own dpi to an RGB ``uint8`` array of shape ``(H, W, 3)``.

    The layout matches ``SummaryWriter.add_image(tag, array, dataformats="HWC")``.

    .. code-block:: python

        writer.add_image("cam", figure_to_array(fig), global_step=epoch, dataformats="HWC")
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()
