# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Files of the command line: user-facing errors, reading images, safe names and all-or-nothing output folders."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "CLIError",
    "case_names",
    "check_exists",
    "read_image",
    "sanitize",
    "staged_directory",
    "write_json",
    "write_nifti",
]

_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".gz")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class CLIError(Exception):
    """An error the user can act on: printed as one line on stderr, exit status 1, no traceback."""


def check_exists(paths: Sequence[str], what: str) -> None:
    """Raise :py:class:`CLIError` for the first of ``paths`` that does not exist."""
    for path in paths:
        if not os.path.exists(path):
            raise CLIError(f"{what} not found: {path}")


def read_image(path: str, what: str = "image") -> Any:
    """Read a NIfTI file, an ITK image (NRRD, MHA, ...) or a DICOM series folder with MONAI's ``LoadImage``.

    Returns:
        a channel-first ``MetaTensor`` ``(C, *spatial)`` whose affine maps voxels to RAS world coordinates.
    """
    from monai.transforms import LoadImage

    check_exists([path], what)
    try:
        return LoadImage(image_only=True, ensure_channel_first=True)(path)
    except Exception as exc:  # readers raise many types; the user needs the file name and the first reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"cannot read {what} {path}: {reason}") from exc


def sanitize(name: str, fallback: str = "case", max_length: int = 64) -> str:
    """A file-name component made of ``[A-Za-z0-9_-]`` only (no path separators, no leading dot)."""
    cleaned = _UNSAFE.sub("_", name).strip("_-")[:max_length]
    return cleaned or fallback


def case_names(paths: Sequence[str]) -> list[str]:
    """Unique, sanitised case names from input paths (file names without image extensions, or folder names)."""
    names: list[str] = []
    for path in paths:
        base = os.path.basename(os.path.normpath(path))
        for ext in _EXTENSIONS:
            if base.lower().endswith(ext):
                base = base[: -len(ext)]
                break
        name, n = sanitize(base), 1
        while name in names:
            n += 1
            name = f"{sanitize(base)}_{n}"
        names.append(name)
    return names


@contextmanager
def staged_directory(output_root: str, name: str) -> Iterator[str]:
    """A temporary folder inside ``output_root`` whose files move to ``output_root/name`` only on success.

    On an exception (including ``KeyboardInterrupt``) the temporary folder is removed and nothing of the case is
    left behind. On success a new case folder is renamed in place; files of an existing one are replaced one by one.
    """
    staging = tempfile.mkdtemp(prefix=".segcam-tmp-", dir=output_root)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the case folder gets the usual permissions
    try:
        yield staging
        final = os.path.join(output_root, name)
        if not os.path.isdir(final):
            os.replace(staging, final)
        else:
            for entry in os.listdir(staging):
                os.replace(os.path.join(staging, entry), os.path.join(final, entry))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Write a 3D array as NIfTI with ``affine`` (voxel -> RAS world), as the image's qform and sform."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.to_filename(path)


def write_json(data: dict, path: str) -> None:
    """Write ``data`` as indented JSON."""
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2)
        stream.write("\n")
