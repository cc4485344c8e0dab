# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Orthogonal-slices overlay: axial, coronal and sagittal planes of a 3D CAM through one voxel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from monai_segcam.visualize.overlay import Backdrop, new_figure
from monai_segcam.visualize.planes import VIEWS, VolumeLike, cam_range, view_axes

if TYPE_CHECKING:
    from matplotlib.figure import Figure as FigureType

__all__ = ["plot_orthogonal_slices"]


def plot_orthogonal_slices(
    image: VolumeLike,
    cam: VolumeLike,
    region: VolumeLike | None = None,
    center: str | Sequence[int] = "peak",
    spacing: Sequence[float] | None = None,
    cmap: Any = "jet",
    alpha: float = 0.5,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    radiological: bool = True,
    percentiles: Sequence[float] = (1.0, 99.0),
    figsize: Sequence[float] = (12.0, 4.5),
    affine: Any = None,
) -> FigureType:
    """Axial, coronal and sagittal planes of ``cam`` over ``image`` through one voxel.

    Volumes are spatial arrays ``(X, Y, Z)`` on one voxel grid, optionally channel-first ``(1, X, Y, Z)``, shown in
    the nearest RAS orientation of their ``affine`` (the voxels permuted, nothing interpolated): the axial plane
    fixes the superior axis, the coronal plane the anterior one, the sagittal plane the right one. Planes are shown
    anterior / superior up; axial and coronal planes show the patient's right on the left (radiological
    convention) unless ``radiological=False``; sagittal planes show anterior on the left; each plane carries its
    orientation letters. See :mod:`monai_segcam.visualize.planes` for the exact rules. Each plane's title gives its
    slice by the grid's own voxel axis and index.

    Args:
        image: 3D image, drawn in grey with a robust percentile window.
        cam: 3D map on the image's voxel grid, drawn as a colour overlay.
        region: optional 3D mask on the same grid (non-zero inside), drawn as a contour line.
        center: ``"peak"`` (CAM maximum), ``"centroid"`` (of ``region``) or a voxel index ``(i, j, k)`` of the grid;
            see :func:`~monai_segcam.visualize.planes.find_center` for the fallbacks of constant CAMs and
            empty regions.
        spacing: voxel spacing ``(sx, sy, sz)`` for the aspect ratio; by default read from the affine of a
            ``MetaTensor`` input (image first, then cam), else isotropic.
        cmap: colour map of the CAM.
        alpha: opacity of the CAM overlay.
        title: optional figure title.
        vmin: lower end of the CAM colour scale (default ``min(0, cam.min())``), shared by the three planes.
        vmax: upper end of the CAM colour scale (default ``cam.max()``).
        colorbar: whether to add a colour bar for the CAM.
        radiological: patient's right on the viewer's left in axial and coronal planes.
        percentiles: lower and upper percentiles of the image intensities used as grey window.
        figsize: figure size in inches.
        affine: the volumes' voxel-to-world (RAS) affine, for the display orientation and the spacing; by default a
            ``MetaTensor`` input's (image first, then cam), else the arrays are taken as RAS-ordered.

    Returns:
        a ``matplotlib.figure.Figure`` (not attached to pyplot: save it with
        :func:`~monai_segcam.visualize.figures.save_figure`).

    Raises:
        ValueError: when an input is not 3D (or single-channel 4D), shapes differ, or ``center`` is invalid.

    .. code-block:: python

        fig = plot_orthogonal_slices(batch["image"][0], cam[0], region=batch["label"][0] == 1, title="liver")
        save_figure(fig, "cam_liver.png")
    """
    backdrop = Backdrop.load(image, region, spacing, percentiles, radiological, spacing_sources=[cam], affine=affine)
    heat = backdrop.volume(cam, "cam")
    voxel = backdrop.center(heat, center)
    limits = cam_range([heat], vmin, vmax)

    fig = new_figure(figsize)
    axes = fig.subplots(1, len(VIEWS))
    shown = []
    for ax, view in zip(axes, VIEWS):
        index = voxel[view_axes(view)[0]]
        shown.append(backdrop.draw(ax, heat, view, index, limits, cmap, alpha))
        ax.set_title(backdrop.slice_label(view, index))
        ax.set_label(view)
    if colorbar:
        fig.colorbar(shown[-1], ax=list(axes), shrink=0.8, label="CAM")
    if title is not None:
        fig.suptitle(title)
    return fig
