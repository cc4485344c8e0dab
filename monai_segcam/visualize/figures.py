# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Figures out of memory: atomic PNG files and RGB arrays (e.g. for TensorBoard)."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

import numpy as np
from monai.utils import optional_import

FigureCanvasAgg, _ = optional_import("matplotlib.backends.backend_agg", name="FigureCanvasAgg")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure", "figure_to_array"]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float = 100) -> str:
    """Write ``fig`` as a PNG of ``figsize * dpi`` pixels, atomically.

    The picture is written to a temporary file in the destination folder (created if needed) and moved over
    ``path`` with ``os.replace``, so readers never see a partial file. The file gets mode ``0o644``.

    Args:
        fig: a matplotlib figure.
        path: destination file name.
        dpi: dots per inch.

    Returns:
        the destination path as a string.

    .. code-block:: python

        save_figure(plot_orthogonal_slices(image, cam), "out/case1_cam.png", dpi=150)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as stream:
            fig.savefig(stream, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` at its own dpi to an RGB ``uint8`` array of shape ``(H, W, 3)``.

    The layout matches ``SummaryWriter.add_image(tag, array, dataformats="HWC")``.

    .. code-block:: python

        writer.add_image("cam", figure_to_array(fig), global_step=epoch, dataformats="HWC")
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()
