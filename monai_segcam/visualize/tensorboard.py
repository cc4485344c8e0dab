# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Orthogonal CAM slices as TensorBoard images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monai_segcam.visualize.figures import figure_to_array
from monai_segcam.visualize.planes import VolumeLike
from monai_segcam.visualize.slices import plot_orthogonal_slices

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["log_cam_to_tensorboard"]


def log_cam_to_tensorboard(
    writer: SummaryWriter,
    tag: str,
    image: VolumeLike,
    cam: VolumeLike,
    region: VolumeLike | None = None,
    step: int = 0,
    **plot_kwargs: Any,
) -> None:
    """Log the orthogonal-slices picture of ``cam`` over ``image`` as one RGB image.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or any writer with the same ``add_image``,
            e.g. tensorboardX's).
        tag: TensorBoard tag.
        image: 3D image (or ``(1, X, Y, Z)``).
        cam: 3D map on the image's grid.
        region: optional 3D mask drawn as a contour.
        step: global step.
        plot_kwargs: passed on to :func:`~monai_segcam.visualize.slices.plot_orthogonal_slices`
            (``center``, ``spacing``, ``cmap``, ``alpha``, ``title``, ``vmin``, ``vmax``, ``figsize``, ...).

    .. code-block:: python

        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter("runs/cam") as writer:
            log_cam_to_tensorboard(writer, "cam/liver", image, cam, region=label == 1, step=epoch)
    """
    fig = plot_orthogonal_slices(image, cam, region=region, **plot_kwargs)
    writer.add_image(tag, figure_to_array(fig), global_step=step, dataformats="HWC")
