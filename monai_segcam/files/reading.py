# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Reading image files the way every part of the package reads them: MONAI's ``LoadImage``, channel first, with the
file's voxel-to-world (RAS) affine."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..utils.loading import first_line

__all__ = ["read_image", "file_affine"]


def read_image(path: str | os.PathLike, what: str = "image") -> Any:
    """Read a NIfTI file, an ITK image (NRRD, MHA, ...) or a DICOM series folder with MONAI's ``LoadImage``.

    Args:
        path: the file or DICOM folder.
        what: what the file is, for the error messages (``"image"``, ``"label"``...).

    Returns:
        a channel-first ``MetaTensor`` ``(C, *spatial)`` whose affine maps voxels to RAS world coordinates.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no reader could read it (the message names the file and the first reason).

    Example:
        .. code-block:: python

            image = read_image("ct.nii.gz")  # (1, H, W, D), image.affine
    """
    from monai.transforms import LoadImage

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return LoadImage(image_only=True, ensure_channel_first=True)(path)
    except Exception as exc:  # readers raise many types; the user needs the file name and the first reason
        raise ValueError(f"cannot read {what} {path}: {first_line(exc)}") from exc


def file_affine(path: str | os.PathLike) -> np.ndarray:
    """The voxel-to-world (RAS) affine of an image file as :py:func:`read_image` reads it (the affine every map of the
    file's case is written with).

    Example:
        .. code-block:: python

            file_affine("case_0000.nii.gz")  # 4x4 numpy array
    """
    return np.asarray(read_image(path).affine, dtype=np.float64)
