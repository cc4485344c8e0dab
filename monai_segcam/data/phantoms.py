# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Deterministic synthetic abdominal phantoms for demos, tests and benchmarks.

Each phantom is a CT-like volume (values in Hounsfield units) of an elliptic body with fat/muscle
texture, a spine and an aorta, and two labelled organs:

- class ``1``: a large, smoothly deformed and textured ellipsoid (liver-like);
- class ``2``: a smaller organ that appears as **two separate blobs** (kidney-like, one on each
  side of the spine), i.e. two connected components of the same class.

Organ intensities overlap with each other and with the surrounding tissue (the aorta is as bright
as the kidney cortex), and a smooth bias field plus Gaussian noise is added, so a network has to use
shape and texture, not a threshold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["make_phantom", "phantom_affine", "write_phantom_dataset"]

# Hounsfield-like tissue values
_AIR, _FAT, _MUSCLE, _LIVER, _CORTEX, _MEDULLA, _AORTA, _BONE = -1000.0, -90.0, 40.0, 80.0, 160.0, 70.0, 160.0, 450.0


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, num = ndimage.label(mask)
    if num <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, num + 1))
    return labels == (np.argmax(sizes) + 1)


def _ellipsoid(
    grid: np.ndarray,
    rng: np.random.Generator,
    center: Sequence[float] | np.ndarray,
    radii: Sequence[float] | np.ndarray,
    deform: float,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A randomly rotated ellipsoid whose surface is displaced by a smooth random field.

    Returns the (single connected, hole-free) mask and the normalised radius map (``< 1`` inside).
    """
    rot, _ = np.linalg.qr(np.eye(3) + 0.25 * rng.standard_normal((3, 3)))  # mild random rotation
    offset = grid - np.asarray(center, dtype=np.float32)[:, None, None, None]
    local = np.einsum("ij,j...->i...", rot.astype(np.float32), offset)
    radius = np.sqrt(sum((local[i] / radii[i]) ** 2 for i in range(3)))
    radius = radius / (1.0 + deform * _smooth_field(rng, grid.shape[1:], sigma).clip(-2.5, 2.5))
    mask = ndimage.binary_fill_holes(_largest_component(radius < 1.0))
    return mask, radius


def make_phantom(
    shape: Sequence[int] = (80, 80, 56),
    seed: int = 0,
    noise_std: float = 15.0,
    bias_amplitude: float = 25.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic multi-organ CT-like phantom.

    The geometry scales with ``shape`` (axes are left-right, anterior-posterior, inferior-superior of
    the array grid) and every random choice (organ positions, sizes, rotations, surface deformations,
    textures, bias field, noise) is drawn from ``numpy.random.default_rng(seed)``: the same arguments
    always give the same volume.

    Args:
        shape: spatial shape of the volume. Defaults to ``(80, 80, 56)``.
        seed: random seed. Defaults to 0.
        noise_std: standard deviation of the additive Gaussian noise in HU. Defaults to 15.
        bias_amplitude: standard deviation of the smooth additive bias field in HU. Defaults to 25.

    Returns:
        ``(image, label)``: a float32 volume in HU (integer-valued, in ``[-1024, 3071]``) and a uint8
        label map with ``0`` background, ``1`` large organ, ``2`` small two-part organ.

    Example:

    .. code-block:: python

        image, label = make_phantom((80, 80, 56), seed=3)
        print(image.shape, image.dtype, np.unique(label))  # (80, 80, 56) float32 [0 1 2]
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must have 3 spatial dimensions, got {shape}.")
    rng = np.random.default_rng(seed)
    size = np.asarray(shape, dtype=np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    mid = (size - 1) / 2

    def jitter(scale: float) -> np.ndarray:
        return rng.uniform(-scale, scale, 3) * size

    # body: deformed elliptic cylinder filled with a fat/muscle mixture
    body_radius = np.sqrt(((grid[0] - mid[0]) / (0.45 * size[0])) ** 2 + ((grid[1] - mid[1]) / (0.36 * size[1])) ** 2)
    body = body_radius < 1.0 + 0.06 * _smooth_field(rng, shape, 0.15 * size.min()).clip(-2.5, 2.5)
    muscle_fraction = 1 / (1 + np.exp(-2.5 * (_smooth_field(rng, shape, 0.05 * size.min()) + 0.3)))
    image = np.where(body, _FAT + (_MUSCLE - _FAT) * muscle_fraction, _AIR)

    # spine (posterior, bright) and aorta (anterior to the spine, as bright as the kidney cortex)
    spine_center = mid + np.array([0.0, 0.22, 0.0]) * size
    spine = (grid[0] - spine_center[0]) ** 2 + (grid[1] - spine_center[1]) ** 2 < (0.065 * size[:2].min()) ** 2
    image[spine] = _BONE
    aorta_center = spine_center - np.array([0.0, 0.12, 0.0]) * size + jitter(0.01)
    aorta = (grid[0] - aorta_center[0]) ** 2 + (grid[1] - aorta_center[1]) ** 2 < (0.03 * size[:2].min()) ** 2
    image[aorta] = _AORTA

    # class 1: large textured organ, anterior and to one side
    liver_center = mid + np.array([-0.12, -0.05, 0.03]) * size + jitter(0.03)
    liver_radii = np.array([0.27, 0.2, 0.3]) * size * rng.uniform(0.9, 1.1, 3)
    liver, _ = _ellipsoid(grid, rng, liver_center, liver_radii, deform=0.12, sigma=0.1 * size.min())
    liver &= body & ~spine & ~aorta
    image[liver] = _LIVER + 12.0 * _smooth_field(rng, shape, 1.5)[liver]

    # class 2: two kidney-like blobs either side of the spine, cortex brighter than medulla
    kidneys = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        center = spine_center + np.array([side * 0.21, -0.06, -0.03]) * size + jitter(0.02)
        radii = np.array([0.075, 0.06, 0.15]) * size * rng.uniform(0.9, 1.1, 3)
        kidney, radius = _ellipsoid(grid, rng, center, radii, deform=0.08, sigma=0.06 * size.min())
        image[kidney] = np.where(radius[kidney] < 0.55, _MEDULLA, _CORTEX)
        kidneys |= kidney
    liver = _largest_component(liver & ~ndimage.binary_dilation(kidneys, iterations=1))

    label = np.zeros(shape, dtype=np.uint8)
    label[liver] = 1
    label[kidneys] = 2

    # acquisition: partial-volume blur, smooth bias inside the body, noise
    image = ndimage.gaussian_filter(image, 0.6)
    image += np.where(body, bias_amplitude * _smooth_field(rng, shape, 0.3 * size.min()), 0.0)
    image += noise_std * rng.standard_normal(shape)
    image = np.clip(np.round(image), -1024, 3071).astype(np.float32)
    return image, label


def phantom_affine(shape: Sequence[int], spacing: Sequence[float] = (1.5, 1.5, 2.0)) -> np.ndarray:
    """The voxel-to-world (RAS) affine used for written phantoms: LPS-like storage, i.e. the first two
    array axes run right-to-left and anterior-to-posterior, with anisotropic ``spacing`` (mm) and an
    origin that puts the volume centre at world ``(10, -20, 30)`` mm.

    Args:
        shape: spatial shape of the volume.
        spacing: voxel size in mm along the three array axes. Defaults to ``(1.5, 1.5, 2.0)``.

    Returns:
        A 4x4 float64 affine.

    Example:
        .. code-block:: python

            nib.Nifti1Image(image, phantom_affine(image.shape)).to_filename("phantom.nii.gz")
    """
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    center_voxel = (np.asarray(shape[:3], dtype=np.float64) - 1) / 2
    affine[:3, 3] = np.array([10.0, -20.0, 30.0]) - affine[:3, :3] @ center_voxel
    return affine


def write_phantom_dataset(
    out_dir: str | os.PathLike,
    num: int,
    shape: Sequence[int] = (80, 80, 56),
    seed: int = 0,
    spacing: Sequence[float] = (1.5, 1.5, 2.0),
    overwrite: bool = False,
) -> list[dict[str, str]]:
    """Write ``num`` phantoms as ``imageXXX.nii.gz`` (int16 HU) and ``labelXXX.nii.gz`` (uint8) pairs.

    Case ``i`` is ``make_phantom(shape, seed=seed + i)`` stored with :py:func:`phantom_affine`. Existing
    files are kept unless ``overwrite`` is set, so the call is cheap to repeat (e.g. in a bundle's
    ``initialize``).

    Args:
        out_dir: output folder, created if missing.
        num: number of cases.
        shape: spatial shape of each volume. Defaults to ``(80, 80, 56)``.
        seed: seed of the first case. Defaults to 0.
        spacing: voxel size in mm. Defaults to ``(1.5, 1.5, 2.0)``.
        overwrite: regenerate files that already exist. Defaults to False.

    Returns:
        A MONAI-style datalist ``[{"image": path, "label": path}, ...]``.

    Example:

    .. code-block:: python

        datalist = write_phantom_dataset("./phantoms", num=4, seed=100)
        dataset = monai.data.Dataset(datalist, transform=monai.transforms.LoadImaged(["image", "label"]))
    """
    import nibabel as nib

    os.makedirs(out_dir, exist_ok=True)
    affine = phantom_affine(shape, spacing)
    datalist = []
    for i in range(num):
        item = {key: os.path.join(os.fspath(out_dir), f"{key}{i:03d}.nii.gz") for key in ("image", "label")}
        if overwrite or not all(os.path.exists(path) for path in item.values()):
            image, label = make_phantom(shape, seed=seed + i)
            for key, array in (("image", image.astype(np.int16)), ("label", label)):
                nii = nib.Nifti1Image(array, affine)
                nii.set_qform(affine, code=1)
                nii.set_sform(affine, code=1)
                nib.save(nii, item[key])
        datalist.append(item)
    return datalist
