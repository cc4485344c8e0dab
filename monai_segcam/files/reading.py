# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Reading image files the way every part of the package reads them: MONAI's ``LoadImage``, channel first, with the
file's voxel-to-world (RAS) affine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from monai.utils import optional_import

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
        raise FileNotFoundError(f"{what} not found: {path} (check the path)")
    if os.path.isdir(path) and not os.listdir(path):
        raise ValueError(f"cannot read {what} {path}: the folder is empty; give a DICOM series folder or an image file")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"cannot read {what} {path}: the file is empty (0 bytes); copy or export it again")
    try:
        with _quiet_itk(os.path.isdir(path)):
            return LoadImage(image_only=True, ensure_channel_first=True)(path)
    except Exception as exc:  # readers raise many types; the user needs the file name and the first reason
        hint = (
            "; a folder must hold one DICOM series"
            if os.path.isdir(path)
            else ("; it may be truncated or not an image: copy or export it again")
        )
        raise ValueError(f"cannot read {what} {path}: {first_line(exc).rstrip('.')}{hint}") from exc


@contextlib.contextmanager
def _quiet_itk(folder: bool) -> Iterator[None]:
    """ITK's warnings off while a folder is read (GDCM's "No Series were found" goes straight to the terminal; the
    error raised says it in words), restored afterwards."""
    itk, has_itk = optional_import("itk")
    if not folder or not has_itk:
        yield
        return
    shown = itk.ProcessObject.GetGlobalWarningDisplay()
    itk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        itk.ProcessObject.SetGlobalWarningDisplay(shown)


def file_affine(path: str | os.PathLike) -> np.ndarray:
    """The voxel-to-world (RAS) affine of an image file as :py:func:`read_image` reads it (the affine every map of the
    file's case is written with).

    Example:
        .. code-block:: python

            file_affine("case_0000.nii.gz")  # 4x4 numpy array
    """
    return np.asarray(read_image(path).affine, dtype=np.float64)
