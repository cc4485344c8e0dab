# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""From 3D volumes to the 2D planes that are drawn: input checks, spacing, slice centre, oriented planes.

Display convention (every picture of this package: single-map PNGs, panels, TensorBoard images and the report):
a volume is drawn on its own voxel grid, its voxel axes ordered and flipped to the nearest RAS orientation of its
affine (:py:class:`DisplayOrientation`: a permutation of voxels, nothing interpolated), so that display axis 0
points to the patient's Right, 1 Anterior, 2 Superior whatever the file's voxel order (a file stored LPS is not
shown rotated by 180 degrees). Without an affine the array is taken as RAS-ordered ``(X, Y, Z)`` (e.g. after
``Orientationd(axcodes="RAS")``), optionally channel-first ``(1, X, Y, Z)``. Then:

- axial view: fixed ``Z``; rows run anterior (top) to posterior, columns patient right to left (radiological).
- coronal view: fixed ``Y``; rows run superior (top) to inferior, columns patient right to left (radiological).
- sagittal view: fixed ``X``; rows run superior (top) to inferior, columns anterior (left) to posterior.

Every plane carries its orientation letters (:py:func:`orientation_labels`: R/L, A/P, S/I at its edges), and its
title names the slice by the file's own voxel axis and index (:py:meth:`DisplayOrientation.slice_label`). With
``radiological=False`` (neurological convention) the patient's right is on the viewer's right in the axial and
coronal views. An oblique affine (an axis more than 45 degrees from every world axis) keeps the voxel order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.utils import look_up_option

__all__ = [
    "VIEWS",
    "DisplayOrientation",
    "orientation_labels",
    "VolumeLike",
    "as_volume",
    "check_same_shape",
    "volume_spacing",
    "find_center",
    "view_axes",
    "extract_plane",
    "plane_aspect",
    "slice_label",
    "intensity_window",
    "cam_range",
]

VolumeLike = Union[np.ndarray, torch.Tensor]

VIEWS = ("axial", "coronal", "sagittal")
# view -> (fixed axis, row axis, column axis) of an (X, Y, Z) volume
_VIEW_AXES = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}
_AXIS_NAMES = "xyz"


@dataclass(frozen=True)
class DisplayOrientation:
    """How a volume's voxel axes are shown: display axis ``d`` (0 Right, 1 Anterior, 2 Superior) is the voxel axis
    ``order[d]``, reversed where ``flips[d]``, of a volume of spatial ``shape`` (the nearest RAS orientation of its
    affine; the identity without one). Drawing through it permutes voxels and interpolates nothing.

    Example:
        >>> lps = np.diag([-1.5, -1.5, 2.0, 1.0])
        >>> orientation = DisplayOrientation.of(lps, (80, 80, 56))
        >>> orientation.flips, orientation.to_display_voxel((10, 45, 3))
        ((True, True, False), (69, 34, 3))
    """

    order: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, affine: Any, shape: Sequence[int]) -> DisplayOrientation:
        """The orientation of a volume of spatial ``shape`` with voxel-to-world (RAS) ``affine`` (``None``: RAS)."""
        shape3 = tuple(int(s) for s in shape)
        if affine is None:
            return cls((0, 1, 2), (False, False, False), shape3)  # type: ignore[arg-type]
        affine = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
        columns = np.asarray(affine, dtype=np.float64).reshape(-1, 4, 4)[0, :3, :3]
        world_axis = [int(np.argmax(np.abs(columns[:, i]))) for i in range(3)]
        if sorted(world_axis) != [0, 1, 2]:  # oblique beyond 45 degrees: keep the voxel order
            return cls((0, 1, 2), (False, False, False), shape3)  # type: ignore[arg-type]
        order = tuple(world_axis.index(w) for w in range(3))
        flips = tuple(bool(columns[w, order[w]] < 0) for w in range(3))
        return cls(order, flips, shape3)  # type: ignore[arg-type]

    def to_display(self, volume: np.ndarray) -> np.ndarray:
        """The volume ``(*shape)`` in display order (a view)."""
        shown = np.transpose(volume, self.order)
        return shown[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def to_display_voxel(self, voxel: Sequence[int]) -> tuple[int, int, int]:
        """The display index of the voxel ``voxel`` of the volume."""
        i, j, k = (
            self.shape[a] - 1 - int(voxel[a]) if f else int(voxel[a]) for a, f in zip(self.order, self.flips)
        )  # fmt: skip
        return i, j, k

    def slice_label(self, view: str, index: int) -> str:
        """The title of ``view``'s plane at display ``index``, by the volume's own axis and index, e.g. ``"axial
        z=12"``."""
        fixed = view_axes(view)[0]
        axis = self.order[fixed]
        return f"{view} {_AXIS_NAMES[axis]}={self.shape[axis] - 1 - index if self.flips[fixed] else index}"


def orientation_labels(view: str, radiological: bool = True) -> tuple[str, str, str, str]:
    """The patient directions at the left, right, top and bottom edges of ``view``'s displayed planes.

    Example:
        >>> orientation_labels("axial")
        ('R', 'L', 'A', 'P')
    """
    view = look_up_option(view, VIEWS)
    if view == "sagittal":
        return "A", "P", "S", "I"
    left, right = ("R", "L") if radiological else ("L", "R")
    return (left, right, "A", "P") if view == "axial" else (left, right, "S", "I")


def as_volume(x: VolumeLike, name: str = "volume") -> np.ndarray:
    """Convert a tensor or array to a 3D numpy array, dropping leading dimensions of size 1.

    Args:
        x: a 3D volume ``(X, Y, Z)`` or channel-first ``(1, X, Y, Z)`` (also ``(1, 1, X, Y, Z)``);
            ``torch.Tensor`` (any device, with or without grad), ``MetaTensor`` or numpy array.
        name: the argument name used in error messages.

    Raises:
        ValueError: when the input is not 3D after dropping leading dimensions of size 1.

    .. code-block:: python

        vol = as_volume(torch.rand(1, 32, 32, 16))  # numpy array of shape (32, 32, 16)
    """
    if isinstance(x, torch.Tensor):
        t = x.as_tensor() if isinstance(x, MetaTensor) else x
        t = t.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        arr = t.numpy()
    else:
        arr = np.asarray(x)
    shape = arr.shape
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(
            f"`{name}` must be a 3D volume (X, Y, Z) or channel-first with a single channel (1, X, Y, Z), "
            f"got shape {tuple(shape)}; select one channel first."
        )
    return arr


def check_same_shape(reference: np.ndarray, **others: np.ndarray | None) -> None:
    """Raise a ValueError naming the first of ``others`` whose spatial shape differs from ``reference``."""
    for name, arr in others.items():
        if arr is not None and arr.shape != reference.shape:
            raise ValueError(
                f"`{name}` has spatial shape {arr.shape} but the image has {reference.shape}: "
                "CAMs and regions must be on the image's voxel grid."
            )


def volume_spacing(spacing: Sequence[float] | None, *sources: object) -> tuple[float, float, float]:
    """Voxel spacing used for the aspect ratio of the drawn planes.

    Args:
        spacing: explicit ``(sx, sy, sz)``; when None the spacing of the first ``MetaTensor`` among ``sources``
            (from its affine) is used, otherwise isotropic ``(1, 1, 1)``.
        sources: the inputs, searched in order for a ``MetaTensor``.

    Raises:
        ValueError: when ``spacing`` is not three positive finite numbers.
    """
    if spacing is None:
        for src in sources:
            if isinstance(src, MetaTensor):
                affine = src.affine
                if affine.ndim == 3:  # batched meta data: all items share the grid here
                    affine = affine[0]
                sx, sy, sz = (float(s) for s in affine_to_spacing(affine, r=3))
                return sx, sy, sz
        return (1.0, 1.0, 1.0)
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"`spacing` must be three positive numbers (sx, sy, sz), got {spacing!r}.")
    return values


def _centroid(mask: np.ndarray) -> tuple[int, int, int] | None:
    coords = np.argwhere(mask)
    if coords.size == 0:
        return None
    i, j, k = (int(c) for c in np.rint(coords.mean(axis=0)))
    return i, j, k


def find_center(
    cam: np.ndarray, region: np.ndarray | None = None, center: str | Sequence[int] = "peak"
) -> tuple[int, int, int]:
    """Voxel ``(i, j, k)`` the orthogonal planes go through.

    Args:
        cam: 3D map.
        region: optional 3D mask (non-zero voxels are in the region).
        center: ``"peak"`` (the CAM maximum; if the CAM is constant, the region centroid, else the volume
            centre), ``"centroid"`` (the region's centroid, rounded; the volume centre for an empty region)
            or an explicit voxel index ``(i, j, k)``.

    Raises:
        ValueError: for an unknown option, ``"centroid"`` without a region, or an index out of bounds.

    .. code-block:: python

        cam = np.zeros((8, 8, 8)); cam[1, 2, 3] = 1.0
        find_center(cam)  # (1, 2, 3)
    """
    shape = cam.shape
    middle = tuple(s // 2 for s in shape)
    if not isinstance(center, str):
        idx = tuple(int(c) for c in center)
        if len(idx) != 3 or not all(0 <= c < s for c, s in zip(idx, shape)):
            raise ValueError(f"`center` {tuple(center)!r} is not a voxel index inside the volume of shape {shape}.")
        return idx
    mode = look_up_option(center, ("peak", "centroid"))
    mask = None if region is None else region != 0
    if mode == "centroid":
        if mask is None:
            raise ValueError('`center="centroid"` needs a `region`.')
        return _centroid(mask) or middle
    finite = np.isfinite(cam)
    if finite.any() and cam[finite].max() > cam[finite].min():
        flat = int(np.argmax(np.where(finite, cam, -np.inf)))
        i, j, k = (int(c) for c in np.unravel_index(flat, shape))
        return i, j, k
    return (None if mask is None else _centroid(mask)) or middle


def view_axes(view: str) -> tuple[int, int, int]:
    """``(fixed, row, column)`` axes of an ``(X, Y, Z)`` volume for ``view`` in :data:`VIEWS`."""
    return _VIEW_AXES[look_up_option(view, VIEWS)]


def extract_plane(volume: np.ndarray, view: str, index: int, radiological: bool = True) -> np.ndarray:
    """The 2D plane of ``volume`` at ``index`` along the fixed axis of ``view``, oriented for display.

    Row 0 is the top of the picture and column 0 its left (see the module docstring for the convention).

    .. code-block:: python

        plane = extract_plane(vol, "axial", index=vol.shape[2] // 2)  # shape (Y, X)
    """
    fixed, row, col = view_axes(view)
    if not 0 <= index < volume.shape[fixed]:
        raise ValueError(
            f"{view} slice index {index} is outside [0, {volume.shape[fixed]}) "
            f"(axis {_AXIS_NAMES[fixed]} of a volume of shape {volume.shape})."
        )
    plane = np.take(volume, index, axis=fixed)
    if row > col:  # the remaining axes come in increasing order: put the row axis first
        plane = plane.T
    plane = plane[::-1]  # anterior / superior up
    if radiological or col != 0:  # patient right on the left; anterior on the left in sagittal views
        plane = plane[:, ::-1]
    return plane


def plane_aspect(view: str, spacing: Sequence[float]) -> float:
    """``imshow`` aspect ratio (row spacing / column spacing) of ``view``'s planes."""
    _, row, col = view_axes(view)
    return float(spacing[row]) / float(spacing[col])


def slice_label(view: str, index: int) -> str:
    """Short label such as ``"axial z=12"``."""
    return f"{view} {_AXIS_NAMES[view_axes(view)[0]]}={index}"


def intensity_window(image: np.ndarray, percentiles: Sequence[float] = (1.0, 99.0)) -> tuple[float, float]:
    """Robust grey-level window ``(low, high)`` from percentiles of the finite voxels; never empty."""
    values = image[np.isfinite(image)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, tuple(percentiles)))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0
    return low, high


def cam_range(
    maps: Sequence[np.ndarray], vmin: float | None = None, vmax: float | None = None
) -> tuple[float, float]:
    """Colour range shared by ``maps``: from ``min(0, min)`` to ``max`` of their finite values by default.

    An empty range (e.g. an all-zero map) is widened to width 1 on the side not given explicitly, so every
    map draws without a degenerate norm.

    Raises:
        ValueError: when both limits are given and ``vmin >= vmax``.
    """
    finite = [m[np.isfinite(m)] for m in maps]
    finite = [f for f in finite if f.size]
    low = min([0.0] + [float(f.min()) for f in finite]) if vmin is None else float(vmin)
    high = max([low] + [float(f.max()) for f in finite]) if vmax is None else float(vmax)
    if high <= low:
        if vmin is not None and vmax is not None:
            raise ValueError(f"`vmin` ({vmin}) must be smaller than `vmax` ({vmax}).")
        if vmax is None:
            high = low + 1.0
        else:
            low = high - 1.0
    return low, high
