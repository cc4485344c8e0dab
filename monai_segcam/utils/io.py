# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Safe file output: sanitised case names, paths confined to an output folder, atomic writes.

Every file is first written to a temporary file in its destination folder and then moved over the destination with
``os.replace`` (atomic on POSIX and Windows within one file system): a reader, a resumed run or a crash never sees a
partial file, and a failing writer leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import optional_import

nib, _ = optional_import("nibabel")

__all__ = ["safe_token", "safe_case_name", "safe_path", "atomic_output", "save_nifti_atomic"]

_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".gz", ".npy", ".npz", ".png")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_token(text: object, default: str = "x", max_length: int = 100) -> str:
    """``text`` as a file-name-safe token: runs of characters outside ``[A-Za-z0-9._-]`` become ``_``, no leading dots.

    Example:
        .. code-block:: python

            safe_token("decoder.0[seg]")  # 'decoder.0_seg'
    """
    token = _UNSAFE.sub("_", str(text)).lstrip(".")[:max_length].strip("_")
    return token if token else default


def safe_case_name(
    source: Mapping[str, Any] | str | os.PathLike | None, default: str = "case", max_length: int = 100
) -> str:
    """A file-name-safe case identifier from a case's metadata or source path.

    The base name of ``filename_or_obj`` (a DICOM series folder gives the folder's name) without its image
    extension, with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_``, no leading dots, at most
    ``max_length`` characters. The result never contains a path separator and is never ``"."`` or ``".."``.

    Args:
        source: a metadata dict (``MetaTensor.meta``, with ``filename_or_obj``), a path, or ``None``.
        default: the name when there is no usable source name.
        max_length: the longest name returned.

    Example:
        .. code-block:: python

            safe_case_name({"filename_or_obj": "/data/imagesTs/spleen 12.nii.gz"})  # 'spleen_12'
            safe_case_name("../../etc/passwd")  # 'passwd'
    """
    if isinstance(source, Mapping):
        source = source.get("filename_or_obj")
    if isinstance(source, (list, tuple)):  # a series given as its files
        source = os.path.dirname(os.fspath(source[0])) if source else None
    name = os.path.basename(os.path.normpath(os.fspath(source))) if isinstance(source, (str, os.PathLike)) else ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    lower = name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return safe_token(name, default, max_length)


def safe_path(output_dir: str | os.PathLike, *parts: str) -> str:
    """``os.path.join(output_dir, *parts)``, refusing any result outside ``output_dir``.

    Raises:
        ValueError: when the joined path (after resolving ``..`` and symbolic links) leaves ``output_dir``.

    Example:
        .. code-block:: python

            safe_path("out", "case1", "case1_cam.nii.gz")  # 'out/case1/case1_cam.nii.gz'
            safe_path("out", "../evil.nii.gz")  # ValueError
    """
    root = os.path.realpath(os.fspath(output_dir))
    path = os.path.join(os.fspath(output_dir), *parts)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root or resolved == root:
        raise ValueError(f"Refusing to write {path!r}: it is not a file inside the output directory {root!r}.")
    return path


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Context manager giving a temporary path to write ``path`` to; on success it is moved over ``path``.

    The temporary file lies in ``path``'s folder (created if needed) and keeps ``suffix`` (default: the
    destination's extension, e.g. ``.nii.gz``, so writers choose the right format). If the block raises, the
    temporary file is removed and ``path`` is left as it was.

    Example:
        .. code-block:: python

            with atomic_output("out/stats.csv") as tmp:
                with open(tmp, "w") as f:
                    f.write(text)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if suffix is None:
        base = os.path.basename(path)
        suffix = ".nii.gz" if base.lower().endswith(".nii.gz") else os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_nifti_atomic(
    data: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    affine: torch.Tensor | np.ndarray | None = None,
    output_dir: str | os.PathLike | None = None,
    channel_dim: int | None = 0,
    output_dtype: np.dtype | type = np.float32,
) -> str:
    """Write ``data`` as a NIfTI file with nibabel, atomically (see :py:func:`atomic_output`).

    Like MONAI's ``NibabelWriter``: the array is stored channel last (a single channel is squeezed), the affine is
    the voxel-to-world (RAS) affine, set as sform and qform (code 1), and no resampling happens.

    Args:
        data: a channel-first array ``(C, *spatial)`` (``channel_dim=0``) or a spatial array (``channel_dim=None``).
            A ``MetaTensor`` provides its own affine.
        path: destination file (``.nii`` or ``.nii.gz``). Relative to ``output_dir`` when that is given.
        affine: the voxel-to-world (RAS) affine; defaults to the ``MetaTensor``'s, else the identity.
        output_dir: when given, ``path`` must lie inside it (see :py:func:`safe_path`).
        channel_dim: the channel dimension of ``data``, or ``None``.
        output_dtype: the data type stored in the file.

    Returns:
        the path written.

    Example:
        .. code-block:: python

            save_nifti_atomic(cam[0], "case1_cam_class1.nii.gz", output_dir="out")  # cam[0]: (1, H, W, D) MetaTensor
    """
    path = safe_path(output_dir, os.fspath(path)) if output_dir is not None else os.fspath(path)
    if affine is None and isinstance(data, MetaTensor):
        affine = data.affine
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if channel_dim is not None:
        array = np.moveaxis(array, channel_dim, -1)
        array = array[..., 0] if array.shape[-1] == 1 else array
    if isinstance(affine, torch.Tensor):
        affine = affine.detach().cpu().numpy()
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be a 4x4 voxel-to-world matrix, got shape {affine.shape}.")
    image = nib.Nifti1Image(np.ascontiguousarray(array.astype(output_dtype, copy=False)), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    with atomic_output(path) as tmp:
        nib.save(image, tmp)
    return path
