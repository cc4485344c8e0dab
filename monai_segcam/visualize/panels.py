# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Panel figure ("information flow" view): one slice of many CAMs, rows x columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.utils import look_up_option

from monai_segcam.visualize.overlay import Backdrop, new_figure
from monai_segcam.visualize.planes import VIEWS, VolumeLike, cam_range, view_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as FigureType
    from matplotlib.image import AxesImage

__all__ = ["plot_cam_panel"]

_SCALES = ("own", "row", "shared")
_SCALE_LABELS = {"own": "own scale", "row": "row scale", "shared": "shared scale"}  # the colour bars say which


def plot_cam_panel(
    image: VolumeLike,
    cams: Mapping[Any, Mapping[Any, VolumeLike]],
    region: VolumeLike | None = None,
    axis: str = "axial",
    slice_index: int | None = None,
    center: str | None = None,
    spacing: Sequence[float] | None = None,
    scale: str = "own",
    cmap: Any = "jet",
    alpha: float = 0.5,
    title: str | None = None,
    colorbar: bool = True,
    radiological: bool = True,
    percentiles: Sequence[float] = (1.0, 99.0),
    cell_size: float = 2.5,
    affine: Any = None,
) -> FigureType:
    """A grid of CAM overlays on the same slice: rows (e.g. layers, encoder to decoder) x columns (classes, methods).

    Args:
        image: 3D image ``(X, Y, Z)`` or ``(1, X, Y, Z)``, drawn in grey behind every cell.
        cams: nested mapping ``{row_label: {column_label: 3D map}}``, all maps on the image's voxel grid. The
            columns are the union of the rows' keys in order of first appearance; a missing cell stays empty.
        region: optional 3D mask (non-zero inside) drawn as a contour in every cell.
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``; orientation (from ``affine``) and letters as in
            :func:`~monai_segcam.visualize.slices.plot_orthogonal_slices`.
        slice_index: index along the fixed display axis (RAS-ordered); by default through the region's centroid,
            or the peak of the first map when there is no (non-empty) region (see ``center``).
        center: without ``slice_index``, the slice through the first map's ``"peak"`` or the region's
            ``"centroid"`` (on the grid's own voxels, as :py:func:`~monai_segcam.visualize.planes.find_center`);
            ``None``: the centroid of a non-empty region, else the peak.
        spacing: voxel spacing ``(sx, sy, sz)``; by default from a ``MetaTensor`` image's affine, else isotropic.
        scale: ``"own"`` (each map scaled to its own maximum: a weak map is not hidden beside a strong one, one
            colour bar per cell), ``"row"`` (one colour scale per row, e.g. per layer) or ``"shared"`` (one scale for
            all cells). Scales span ``min(0, min)`` to ``max`` of the whole 3D maps, not just the slice shown; the
            colour bars' label says which scale was used.
        cmap: colour map of the CAMs.
        alpha: opacity of the CAM overlays.
        title: optional figure title; the slice (e.g. ``"axial z=12"``) is appended.
        colorbar: whether to add colour bars (one per cell, per row, or one shared).
        radiological: patient's right on the viewer's left in axial and coronal planes.
        percentiles: lower and upper percentiles of the image intensities used as grey window.
        cell_size: size of one cell in inches.
        affine: the volumes' voxel-to-world (RAS) affine (default: a ``MetaTensor`` image's; else RAS-ordered).

    Returns:
        a ``matplotlib.figure.Figure``; the cell axes carry the label ``"<row>/<column>"``.

    Raises:
        ValueError: for empty or malformed ``cams``, shape mismatches, unknown options or an out-of-range slice.

    .. code-block:: python

        cams = {layer: {"liver": cam_liver[layer], "tumour": cam_tumour[layer]} for layer in layers}
        fig = plot_cam_panel(image, cams, region=label > 0, axis="coronal", scale="row")
    """
    view = look_up_option(axis, VIEWS)
    scale = look_up_option(scale, _SCALES)
    backdrop = Backdrop.load(image, region, spacing, percentiles, radiological, affine=affine)
    maps, columns = _load_maps(cams, backdrop)
    if slice_index is None:
        first = next(iter(next(iter(maps.values())).values()))
        use_region = backdrop.region is not None and backdrop.region.any()
        center = center or ("centroid" if use_region else "peak")
        slice_index = backdrop.center(first, center)[view_axes(view)[0]]
    shared = cam_range([m for cells in maps.values() for m in cells.values()])

    width = cell_size * len(columns) + 1.0
    margin = 0.35 / width  # room for the row labels: constrained layout misses them next to fixed-aspect images
    fig = new_figure((width, cell_size * len(maps) + 0.5), rect=(margin, 0.0, 1.0 - margin, 1.0))
    grid = fig.subplots(len(maps), len(columns), squeeze=False)
    shown = []
    for r, (row, cells) in enumerate(maps.items()):
        limits = shared if scale == "shared" else None if scale == "own" else cam_range(list(cells.values()))
        drawn = _draw_row(grid[r], row, cells, columns, backdrop, (view, slice_index), limits, cmap, alpha)
        shown.append(drawn[-1][1])
        if colorbar and scale == "row":
            fig.colorbar(shown[-1], ax=list(grid[r]), shrink=0.9, label=_SCALE_LABELS[scale])
        for ax, cell in drawn if colorbar and scale == "own" else ():
            fig.colorbar(cell, ax=ax, shrink=0.8, label=_SCALE_LABELS[scale])
    for c, col in enumerate(columns):
        grid[0, c].set_title(str(col))
    if colorbar and scale == "shared":
        fig.colorbar(shown[-1], ax=list(grid.ravel()), shrink=0.8, label=_SCALE_LABELS[scale])
    label = backdrop.slice_label(view, slice_index)
    fig.suptitle(label if title is None else f"{title} ({label})")
    return fig


def _load_maps(
    cams: Mapping[Any, Mapping[Any, VolumeLike]], backdrop: Backdrop
) -> tuple[dict[Any, dict[Any, np.ndarray]], list[Any]]:
    """The maps as float32 volumes checked to be on the image's grid, and the columns (the union of the rows' keys
    in order of first appearance)."""
    if not isinstance(cams, Mapping) or not cams:
        raise ValueError("`cams` must be a non-empty mapping {row: {column: 3D map}}.")
    columns: list[Any] = []
    for row, cells in cams.items():
        if not isinstance(cells, Mapping) or not cells:
            raise ValueError(f"`cams[{row!r}]` must be a non-empty mapping {{column: 3D map}}.")
        columns += [c for c in cells if c not in columns]
    maps = {
        row: {col: backdrop.volume(m, f"cams[{row!r}][{col!r}]") for col, m in cells.items()}
        for row, cells in cams.items()
    }
    return maps, columns


def _draw_row(
    axes: Sequence[Axes], row: Any, cells: Mapping[Any, np.ndarray], columns: Sequence[Any], backdrop: Backdrop,
    plane: tuple[str, int], limits: Sequence[float] | None, cmap: Any, alpha: float,
) -> list[tuple[Axes, AxesImage]]:  # fmt: skip
    """Draw one row of cells (an empty cell keeps its axes, so that the row label still shows), each over
    ``limits`` (``None``: the map's own range); the cells drawn and their CAM images, for the colour bars."""
    shown = []
    for ax, col in zip(axes, columns):
        ax.set_label(f"{row}/{col}")
        if col not in cells:
            ax.set_frame_on(False)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        own = cam_range([cells[col]]) if limits is None else limits
        shown.append((ax, backdrop.draw(ax, cells[col], *plane, own, cmap, alpha)))
    axes[0].set_ylabel(str(row))
    return shown  # not empty: every row has a cell (checked by _load_maps)
