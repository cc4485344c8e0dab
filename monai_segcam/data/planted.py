# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Deterministic synthetic volumes with planted evidence, for measuring explanation quality.

Two tasks, each case a small volume whose true evidence is known voxel by voxel:

- ``"marker"``: one small ellipsoidal structure whose class is ``2`` when a bright 5³ cube (the *marker*) lies a few
  voxels outside its surface and ``1`` otherwise. Half of the cases (independently of the class) also hold an
  identical cube far away from the structure (the *distractor*), so that the class depends on where the marker is,
  not on whether a bright cube exists. The marker is part of the evidence for class ``2``: an explanation of the
  structure's class-2 score that puts no relevance on the marker hides why the model decided.
- ``"two_objects"``: two separated ellipsoids of the same class ``1`` and different sizes, plus an unlabelled bright
  rod (distractor). Explaining one object should localise that object and not the other one (Hasany et al. 2023).

Values: background 0, structures/objects 1, marker/distractor cubes 2, plus Gaussian noise of ``noise_std`` and a
slight blur. Every random choice is drawn from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["PLANTED_TASKS", "make_marker_case", "make_two_objects_case", "make_planted_case", "make_planted_batch"]

PLANTED_TASKS = ("marker", "two_objects")

_STRUCTURE, _CUBE = 1.0, 2.0
_MARKER_GAP = (3.5, 4.5)  # distance range (voxels) from the marker centre to the nearest structure voxel
_DISTRACTOR_MIN_DISTANCE = 11.0  # distractor centre to structure (voxels)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 24:
        raise ValueError(f"shape must have 3 spatial dimensions of at least 24 voxels, got {shape}.")
    return shape


def _grid(shape: Sequence[int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))


def _ellipsoid(grid: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((grid[i] - center[i]) / radii[i]) ** 2 for i in range(3)) < 1.0


def _cube(shape: Sequence[int], center: Sequence[int] | np.ndarray, half: int = 2) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(int(c) - half, int(c) + half + 1) for c in center)] = True
    return mask


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray:
    """One voxel index (3,) drawn uniformly from a boolean candidate mask."""
    positions = np.argwhere(candidates)
    if len(positions) == 0:
        raise RuntimeError("no room left for a planted cube; use a larger shape.")
    return positions[rng.integers(len(positions))]


def _inner(shape: Sequence[int], margin: int) -> np.ndarray:
    """Voxels at least ``margin`` voxels away from the volume border."""
    inner = np.zeros(shape, dtype=bool)
    inner[tuple(slice(margin, s - margin) for s in shape)] = True
    return inner


def _acquire(rng: np.random.Generator, clean: np.ndarray, noise_std: float) -> np.ndarray:
    image = ndimage.gaussian_filter(clean, 0.5) + noise_std * rng.standard_normal(clean.shape)
    return image.astype(np.float32)[None]


def make_marker_case(
    shape: Sequence[int] = (40, 40, 40),
    seed: int = 0,
    noise_std: float = 0.3,
    marker_probability: float = 0.5,
    distractor_probability: float = 0.5,
) -> dict[str, np.ndarray | int]:
    """One ``"marker"`` case: an ellipsoid of class 2 with a nearby marker cube, or of class 1 without.

    The structure (radii 3 to 4.5 voxels) is placed at random inside the volume. With probability
    ``marker_probability`` a 5³ cube is planted with its centre 3.5 to 4.5 voxels from the nearest structure voxel
    (outside; its corner may touch the surface) and the structure is labelled ``2``, else ``1``. With probability
    ``distractor_probability`` an identical cube is planted at least 11 voxels away from the structure.

    Args:
        shape: spatial shape (each side at least 24). Defaults to ``(40, 40, 40)``.
        seed: random seed. Defaults to 0.
        noise_std: standard deviation of the additive Gaussian noise. Defaults to 0.3.
        marker_probability: probability of a class-2 case. Defaults to 0.5.
        distractor_probability: probability of a far cube. Defaults to 0.5.

    Returns:
        a dict with ``"image"`` (1, *shape) float32, ``"label"`` (1, *shape) int64 (0 background, 1 or 2 on the
        structure), ``"structure"``, ``"marker"`` and ``"distractor"`` boolean masks (1, *shape) (the marker mask is
        empty for class 1, the distractor mask when there is none) and ``"class"`` (1 or 2).

    Example:

    .. code-block:: python

        case = make_marker_case(seed=3)
        print(case["class"], case["marker"].sum())  # 2 125, or 1 0
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    radii = rng.uniform(3.0, 4.5, 3)
    center = np.array([rng.uniform(r + 6.0, s - r - 7.0) for r, s in zip(radii, shape)])
    structure = _ellipsoid(grid, center, radii)
    distance = ndimage.distance_transform_edt(~structure)
    inner = _inner(shape, 3)
    has_marker = bool(rng.random() < marker_probability)
    marker = np.zeros(shape, dtype=bool)
    if has_marker:
        marker = _cube(shape, _pick(rng, inner & (distance >= _MARKER_GAP[0]) & (distance <= _MARKER_GAP[1])))
    distractor = np.zeros(shape, dtype=bool)
    if rng.random() < distractor_probability:
        far = inner & (distance >= _DISTRACTOR_MIN_DISTANCE)
        if has_marker:  # keep the distractor away from the marker too
            far &= ndimage.distance_transform_edt(~marker) >= _DISTRACTOR_MIN_DISTANCE
        distractor = _cube(shape, _pick(rng, far))
    clean = np.zeros(shape, dtype=np.float32)
    clean[structure] = _STRUCTURE
    clean[marker | distractor] = _CUBE
    label = np.zeros((1, *shape), dtype=np.int64)
    label[0, structure] = 2 if has_marker else 1
    return {
        "image": _acquire(rng, clean, noise_std),
        "label": label,
        "structure": structure[None],
        "marker": marker[None],
        "distractor": distractor[None],
        "class": 2 if has_marker else 1,
    }


def make_two_objects_case(
    shape: Sequence[int] = (40, 40, 40), seed: int = 0, noise_std: float = 0.3
) -> dict[str, np.ndarray | int]:
    """One ``"two_objects"`` case: two separated ellipsoids of class 1 of clearly different sizes and a bright rod.

    The larger object has radii 6 to 7.5 voxels, the smaller 3.5 to 4.5, so the larger one is always the largest
    connected component (``Component(index=0)``); their surfaces are at least 6 voxels apart. The unlabelled rod
    (2x2x10 voxels, value 2) lies at least 4 voxels from both objects.

    Args:
        shape: spatial shape (each side at least 24). Defaults to ``(40, 40, 40)``.
        seed: random seed. Defaults to 0.
        noise_std: standard deviation of the additive Gaussian noise. Defaults to 0.3.

    Returns:
        a dict with ``"image"`` (1, *shape) float32, ``"label"`` (1, *shape) int64 (1 on both objects),
        ``"objects"`` (2, *shape) boolean masks (channel 0 the larger object, channel 1 the smaller one),
        ``"distractor"`` (1, *shape) boolean rod mask and ``"class"`` (1).

    Example:

    .. code-block:: python

        case = make_two_objects_case(seed=0)
        big, small = case["objects"]
        print(big.sum() > small.sum())  # True
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    big_radii, small_radii = rng.uniform(6.0, 7.5, 3), rng.uniform(3.5, 4.5, 3)
    big = _ellipsoid(grid, np.array([rng.uniform(r + 2.0, s - r - 3.0) for r, s in zip(big_radii, shape)]), big_radii)
    distance = ndimage.distance_transform_edt(~big)
    room = _inner(shape, int(np.ceil(small_radii.max())) + 2) & (distance >= 6.0 + small_radii.max())
    small = _ellipsoid(grid, _pick(rng, room).astype(np.float32), small_radii)
    axis = int(rng.integers(3))
    half = [1, 1, 1]
    half[axis] = 5
    start = _pick(rng, _inner(shape, 6) & (ndimage.distance_transform_edt(~(big | small)) >= 4.0 + 5.0))
    rod = np.zeros(shape, dtype=bool)
    rod[tuple(slice(int(c) - h, int(c) + h) for c, h in zip(start, half))] = True
    clean = np.zeros(shape, dtype=np.float32)
    clean[big | small] = _STRUCTURE
    clean[rod] = _CUBE
    return {
        "image": _acquire(rng, clean, noise_std),
        "label": (big | small)[None].astype(np.int64),
        "objects": np.stack([big, small]),
        "distractor": rod[None],
        "class": 1,
    }


def make_planted_case(task: str, shape: Sequence[int] = (40, 40, 40), seed: int = 0) -> dict[str, np.ndarray | int]:
    """One case of ``task`` (``"marker"`` or ``"two_objects"``) with default settings.

    Example:

    .. code-block:: python

        case = make_planted_case("two_objects", seed=7)
    """
    if task == "marker":
        return make_marker_case(shape, seed)
    if task == "two_objects":
        return make_two_objects_case(shape, seed)
    raise ValueError(f"task must be one of {PLANTED_TASKS}, got {task!r}.")


def make_planted_batch(task: str, seeds: Sequence[int], shape: Sequence[int] = (40, 40, 40)) -> dict[str, np.ndarray]:
    """Cases of ``task`` for each seed, stacked along a new batch axis (``"class"`` becomes an int64 array).

    Example:

    .. code-block:: python

        batch = make_planted_batch("marker", seeds=range(4))
        print(batch["image"].shape, batch["class"])  # (4, 1, 40, 40, 40) e.g. [1 2 2 1]
    """
    cases = [make_planted_case(task, shape, seed) for seed in seeds]
    if not cases:
        raise ValueError("seeds is empty.")
    return {key: np.stack([np.asarray(case[key]) for case in cases]) for key in cases[0]}
