# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The volumes of a review report: one grid per case, small and compressed.

Every volume a case page shows is brought onto one *report grid*: the case image's grid, reduced by one factor so
that no side exceeds ``max_size`` voxels (area averaging, so relevance mass is kept), with its voxel axes ordered
and flipped to the nearest RAS orientation (axis 0 points right, 1 anterior, 2 superior; a permutation of voxel
centres, so it interpolates nothing). Volumes on another grid (a CAM on the original image grid, the image on the
network-input grid) are resampled through both affines. Each volume is then stored once, as a gzipped NIfTI-1 of
``uint8`` values with ``scl_slope``/``scl_inter`` giving back real values: images over their 0.5-99.5 percentile
range, CAMs over ``[min(0, min), max]`` (256 levels), label maps as labels, multi-label masks as one bit per class.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.utils import optional_import

nib, _ = optional_import("nibabel")

__all__ = ["Grid", "report_grid", "resample", "as_volume", "quantize", "encode_nifti_gz", "MAX_BITMASK_CLASSES"]

MAX_BITMASK_CLASSES = 8


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (3 sides) and ``affine`` (voxel index to world millimetres, 4x4)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """The voxel sides in millimetres (lengths of the affine's columns)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def same_as(self, other: Grid) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=1e-4)


def as_volume(data: torch.Tensor | np.ndarray, reference: Grid | None = None) -> tuple[np.ndarray, Grid]:
    """A channel-first array ``(C, X, Y, Z)`` (float) and its grid from a ``MetaTensor``, tensor or array.

    ``data`` is ``(C, X, Y, Z)`` or ``(X, Y, Z)``. A ``MetaTensor`` brings its own affine; a plain tensor or array
    must lie on ``reference``'s grid (same spatial shape) or, without a reference, gets the identity affine.

    Raises:
        ValueError: for data that is not 3D, or a plain array whose shape differs from ``reference``'s.

    Example:
        .. code-block:: python

            array, grid = as_volume(image)  # image: (1, X, Y, Z) MetaTensor -> its values and its affine
    """
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"Report volumes are 3D: (C, X, Y, Z) or (X, Y, Z), got shape {tuple(array.shape)}.")
    shape = tuple(int(s) for s in array.shape[1:])
    if isinstance(data, MetaTensor):
        return array, Grid(shape, np.asarray(data.affine.cpu().numpy(), dtype=np.float64))  # type: ignore[arg-type]
    if reference is not None and shape != reference.shape:
        raise ValueError(
            f"A volume without an affine (not a MetaTensor) must lie on the image's grid {reference.shape}, got "
            f"{shape}: pass a MetaTensor so that it can be resampled."
        )
    return array, Grid(shape, reference.affine if reference is not None else np.eye(4))  # type: ignore[arg-type]


def report_grid(grid: Grid, max_size: int) -> Grid:
    """The report grid of an image on ``grid``: at most ``max_size`` voxels per side, voxel axes in RAS order.

    Example:
        .. code-block:: python

            report_grid(Grid((512, 512, 300), affine), 128).shape  # (128, 128, 75)
    """
    if max_size < 2:
        raise ValueError(f"max_size must be at least 2, got {max_size}.")
    factor = max(1.0, max(grid.shape) / max_size)
    shape = tuple(min(s, max(1, round(s / factor))) for s in grid.shape)
    ratio = np.array(grid.shape, dtype=np.float64) / np.array(shape, dtype=np.float64)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(ratio)
    scale[:3, 3] = (ratio - 1) / 2  # voxel centres of the coarse grid in fine voxel indices
    affine = grid.affine @ scale
    columns = affine[:3, :3]
    world_axis = [int(np.argmax(np.abs(columns[:, i]))) for i in range(3)]
    if sorted(world_axis) != [0, 1, 2]:  # oblique beyond 45 degrees: keep the voxel order
        return Grid(shape, affine)  # type: ignore[arg-type]
    order = [world_axis.index(w) for w in range(3)]
    to_ras = np.zeros((4, 4))
    to_ras[3, 3] = 1
    for new, old in enumerate(order):
        flip = columns[new, old] < 0
        to_ras[old, new] = -1.0 if flip else 1.0
        to_ras[old, 3] = shape[old] - 1 if flip else 0.0
    return Grid(tuple(shape[old] for old in order), affine @ to_ras)  # type: ignore[arg-type]


def _area_prefilter(array: np.ndarray, grid: Grid, target: Grid) -> tuple[np.ndarray, Grid]:
    """Average blocks of the source so that its voxels are no smaller than the target's (avoids aliasing)."""
    steps = np.linalg.norm(np.linalg.inv(target.affine[:3, :3]) @ grid.affine[:3, :3], axis=0)  # in target voxels
    factors = [min(n, max(1, math.floor(1 / max(step, 1e-12) + 1e-6))) for step, n in zip(steps, grid.shape)]
    if all(f == 1 for f in factors):
        return array, grid
    shape = tuple(n // f for n, f in zip(grid.shape, factors))
    cropped = array[:, : shape[0] * factors[0], : shape[1] * factors[1], : shape[2] * factors[2]]
    blocks = cropped.reshape(array.shape[0], shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (np.array(factors) - 1) / 2
    return blocks.mean(axis=(2, 4, 6)), Grid(shape, grid.affine @ scale)


def resample(array: np.ndarray, grid: Grid, target: Grid, nearest: bool = False) -> np.ndarray:
    """``array`` ``(C, *grid.shape)`` on ``target``: trilinear after block averaging, or nearest for labels.

    Voxels of ``target`` outside the source volume get 0.

    Example:
        .. code-block:: python

            on_report = resample(cam, cam_grid, report_grid(image_grid, 96))  # cam: (1, *cam_grid.shape)
    """
    if not nearest:
        array, grid = _area_prefilter(array.astype(np.float32, copy=False), grid, target)
    if grid.same_as(target):
        return array
    mapping = np.linalg.inv(grid.affine) @ target.affine  # target voxel -> source voxel
    axes = [np.arange(n, dtype=np.float64) for n in target.shape]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    source = points @ mapping[:3, :3].T + mapping[:3, 3]
    sizes = np.array(grid.shape, dtype=np.float64)
    normalised = np.where(sizes > 1, source / np.maximum(sizes - 1, 1) * 2 - 1, source * 2)
    sample_grid = torch.from_numpy(normalised[:, ::-1].copy()).float().view(1, *target.shape, 3)
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    mode = "nearest" if nearest else "bilinear"
    out = F.grid_sample(values, sample_grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0].numpy()


def quantize(values: np.ndarray, kind: str) -> tuple[np.ndarray, float, float]:
    """``uint8`` codes of a 3D array with ``real = code * slope + inter``.

    ``kind``: ``"image"`` (0.5-99.5 percentile range, clipped), ``"cam"`` (``[min(0, min), max]``) or
    ``"labels"`` (integers 0-255 as they are).

    Example:
        .. code-block:: python

            codes, slope, inter = quantize(cam, "cam")  # cam ~ codes * slope + inter, |error| <= slope / 2
    """
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if kind == "labels":
        if finite.size and (finite.min() < 0 or finite.max() > 255):
            raise ValueError(f"Label maps in a report hold 0-255, got values {finite.min()}-{finite.max()}.")
        return np.rint(finite).astype(np.uint8), 1.0, 0.0
    if kind == "image":
        low, high = np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 1.0)
    else:
        low, high = min(0.0, float(finite.min(initial=0.0))), float(finite.max(initial=0.0))
    low, high = float(low), float(high)
    if not high > low:
        return np.zeros(finite.shape, np.uint8), 1.0, low
    slope = (high - low) / 255.0
    return np.clip(np.rint((finite - low) / slope), 0, 255).astype(np.uint8), slope, low


def encode_nifti_gz(codes: np.ndarray, grid: Grid, slope: float = 1.0, inter: float = 0.0) -> bytes:
    """The gzipped NIfTI-1 bytes of a ``uint8`` volume on ``grid`` (little endian, deterministic).

    Example:
        .. code-block:: python

            codes, slope, inter = quantize(cam, "cam")
            open("cam.nii.gz", "wb").write(encode_nifti_gz(codes, grid, slope, inter))
    """
    if codes.dtype != np.uint8 or codes.shape != grid.shape:
        raise ValueError(f"Expected uint8 codes of shape {grid.shape}, got {codes.dtype} {codes.shape}.")
    header = nib.Nifti1Header(endianness="<")
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(codes, grid.affine, header=header)
    image.set_qform(grid.affine, code=1)
    image.set_sform(grid.affine, code=1)
    image.header.set_slope_inter(slope, inter)
    return gzip.compress(image.to_bytes(), compresslevel=9, mtime=0)


def bitmask(channels: np.ndarray) -> np.ndarray:
    """One byte per voxel from up to 8 binary channels ``(C, *spatial)``: bit ``c`` is channel ``c``.

    Example:
        >>> int(bitmask(np.array([[1.0], [0.0], [1.0]]))[0])
        5
    """
    if channels.shape[0] > MAX_BITMASK_CLASSES:
        raise ValueError(
            f"A multi-label segmentation in a report holds at most {MAX_BITMASK_CLASSES} channels, got "
            f"{channels.shape[0]}."
        )
    weights = (1 << np.arange(channels.shape[0], dtype=np.uint16)).reshape(-1, *([1] * (channels.ndim - 1)))
    return ((channels > 0.5).astype(np.uint16) * weights).sum(0).astype(np.uint8)


def label_channels(segmentation: np.ndarray, multi_label: bool) -> np.ndarray:
    """A label map ``(X, Y, Z)`` (integers) or, with ``multi_label``, a bitmask, from ``(C, X, Y, Z)``.

    A single channel is a label map; several channels are one-hot or scores (argmax), or with ``multi_label``
    independent binary masks (``> 0.5``).

    Example:
        >>> label_channels(np.array([[0.2, 0.9], [0.8, 0.1]]), multi_label=False).tolist()
        [1, 0]
    """
    if segmentation.shape[0] == 1:
        return np.rint(segmentation[0]).astype(np.int64) if not multi_label else bitmask(segmentation)
    return bitmask(segmentation) if multi_label else segmentation.argmax(0).astype(np.int64)


def class_masks(labels: np.ndarray, classes: Sequence[int], multi_label: bool) -> np.ndarray:
    """Boolean masks ``(n, X, Y, Z)`` of ``classes`` in a label map or bitmask.

    Example:
        >>> class_masks(np.array([0, 1, 2]), [1, 2], multi_label=False).tolist()
        [[False, True, False], [False, False, True]]
    """
    if multi_label:
        return np.stack([(labels.astype(np.int64) >> c) & 1 > 0 for c in classes])
    return np.stack([labels == c for c in classes])
