# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""One picture cell: a grey image plane with a CAM colour overlay and a region contour; the backdrop (image,
region, grey window, spacing) every figure draws its CAM planes over."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import optional_import

from .planes import (
    DisplayOrientation,
    VolumeLike,
    as_volume,
    check_same_shape,
    extract_plane,
    find_center,
    intensity_window,
    orientation_labels,
    plane_aspect,
    volume_spacing,
)

Figure, _ = optional_import("matplotlib.figure", name="Figure")

__all__ = ["draw_overlay", "Backdrop", "new_figure", "ZERO_MAP"]

ZERO_MAP = "zero map"  # what a cell of an all-zero map says instead of drawing it

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as FigureType
    from matplotlib.image import AxesImage


def new_figure(figsize: Sequence[float], rect: Sequence[float] | None = None) -> FigureType:
    """A ``matplotlib.figure.Figure`` with constrained layout (within ``rect``, figure fractions ``(left, bottom,
    width, height)``, when given), not attached to pyplot."""
    fig = Figure(figsize=tuple(figsize), layout="constrained")
    if rect is not None:
        fig.get_layout_engine().set(rect=tuple(rect))
    return fig


@dataclass
class Backdrop:
    """What every CAM plane of a figure is drawn over: the grey image, the region contour, the grey window, the
    voxel spacing, the display orientation of the volumes' grid and the radiological rule (see
    :py:mod:`~monai_segcam.visualize.planes` for the convention). The image, the region and every map are on one
    voxel grid; they are held in display order.

    Example:
        .. code-block:: python

            backdrop = Backdrop.load(image, region=label == 1, affine=image.affine)
            cam = backdrop.volume(cam_volume, "cam")
            shown = backdrop.draw(ax, cam, "axial", backdrop.center(cam)[2], cam_limits=(0.0, 1.0))
    """

    image: np.ndarray
    region: np.ndarray | None
    window: tuple[float, float]
    spacing: tuple[float, float, float]
    radiological: bool = True
    orientation: DisplayOrientation | None = None

    @classmethod
    def load(
        cls,
        image: VolumeLike,
        region: VolumeLike | None = None,
        spacing: Sequence[float] | None = None,
        percentiles: Sequence[float] = (1.0, 99.0),
        radiological: bool = True,
        spacing_sources: Sequence[object] = (),
        affine: Any = None,
    ) -> Backdrop:
        """The backdrop of ``image`` (3D, or channel-first 4D) and ``region`` (non-zero inside; checked to be on the
        image's grid); the spacing is ``spacing``, else a ``MetaTensor``'s among ``image`` and ``spacing_sources``;
        the grid's orientation is ``affine``'s, else that ``MetaTensor``'s, else RAS."""
        img = as_volume(image, "image").astype(np.float32, copy=False)
        mask = None if region is None else as_volume(region, "region") != 0
        check_same_shape(img, region=mask)
        window = intensity_window(img, percentiles)
        if affine is None:
            affine = next((s.affine for s in (image, *spacing_sources) if isinstance(s, MetaTensor)), None)
        orientation = DisplayOrientation.of(affine, img.shape)
        own = _affine_spacing(affine) if spacing is None and affine is not None else volume_spacing(spacing)
        shown = tuple(own[a] for a in orientation.order)
        mask = None if mask is None else orientation.to_display(mask)
        return cls(orientation.to_display(img), mask, window, shown, radiological, orientation)  # type: ignore[arg-type]

    @property
    def _orientation(self) -> DisplayOrientation:
        return self.orientation or DisplayOrientation.of(None, self.image.shape)

    def volume(self, x: VolumeLike, name: str) -> np.ndarray:
        """A map as a float32 volume in display order, checked to be on the image's grid (``name`` in the error)."""
        volume = as_volume(x, name).astype(np.float32, copy=False)
        check_same_shape(np.empty(self._orientation.shape, dtype=bool), **{name: volume})
        return self._orientation.to_display(volume)

    def center(self, cam: np.ndarray, center: str | Sequence[int] = "peak") -> tuple[int, int, int]:
        """The display voxel the planes go through: :py:func:`~monai_segcam.visualize.planes.find_center` on the
        volumes' own grid (a map in display order from :py:meth:`volume`; an explicit ``center`` in the grid's own
        voxel indices), so that the peak is the one the files record."""
        orientation = self._orientation
        undo = _inverse(orientation)
        own = find_center(undo(cam), None if self.region is None else undo(self.region), center)
        return orientation.to_display_voxel(own)

    def slice_label(self, view: str, index: int) -> str:
        """The title of ``view``'s plane at display ``index``, by the grid's own voxel axis and index."""
        return self._orientation.slice_label(view, index)

    def draw(
        self, ax: Axes, cam: np.ndarray, view: str, index: int, cam_limits: Sequence[float], cmap: Any = "jet",
        alpha: float = 0.5,
    ) -> AxesImage:  # fmt: skip
        """Draw the plane ``index`` of ``view`` of ``cam`` (from :py:meth:`volume`) over the backdrop on ``ax``,
        with the orientation letters at its edges.

        An all-zero ``cam`` (no relevance anywhere; the engines return one for a map at float round-off) is not drawn
        as a colour wash: the plane shows the image and says "zero map"."""
        image, heat = (extract_plane(v, view, index, self.radiological) for v in (self.image, cam))
        zero = not np.any(cam)
        region = None if self.region is None else extract_plane(self.region, view, index, self.radiological)
        shown = draw_overlay(
            ax, image, np.full_like(heat, np.nan) if zero else heat, region, image_window=self.window,
            cam_limits=cam_limits, aspect=plane_aspect(view, self.spacing), cmap=cmap, alpha=alpha,
        )  # fmt: skip
        if zero:
            ax.text(0.5, 0.5, ZERO_MAP, transform=ax.transAxes, ha="center", va="center", color="white", fontsize=9,
                    bbox={"facecolor": "black", "alpha": 0.6, "linewidth": 0})  # fmt: skip
        _orientation_letters(ax, orientation_labels(view, self.radiological))
        return shown


def _orientation_letters(ax: Axes, letters: Sequence[str]) -> None:
    """The patient directions at the left, right, top and bottom edges of ``ax`` (anchored boxes: ``ax.artists``)."""
    from matplotlib.offsetbox import AnchoredText

    style = {"color": "white", "fontsize": 7, "fontweight": "bold"}
    for letter, where in zip(letters, ("center left", "center right", "upper center", "lower center")):
        ax.add_artist(AnchoredText(letter, loc=where, frameon=False, pad=0.1, borderpad=0.1, prop=style))


def _affine_spacing(affine: Any) -> tuple[float, float, float]:
    array = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    sx, sy, sz = (float(v) for v in np.linalg.norm(np.asarray(array, np.float64).reshape(-1, 4, 4)[0, :3, :3], axis=0))
    return sx, sy, sz


def _inverse(orientation: DisplayOrientation) -> Any:
    """Display order back to the grid's own voxel order."""
    back = tuple(int(np.argsort(orientation.order)[a]) for a in range(3))

    def undo(volume: np.ndarray) -> np.ndarray:
        unflipped = volume[tuple(slice(None, None, -1) if f else slice(None) for f in orientation.flips)]
        return np.transpose(unflipped, back)

    return undo


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
