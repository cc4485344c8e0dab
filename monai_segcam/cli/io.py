# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Inputs of the command line: user-facing errors and reading images (outputs: :py:mod:`monai_segcam.outputs`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..utils.loading import first_line

__all__ = ["CLIError", "check_exists", "first_line", "read_image"]


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
        raise CLIError(f"cannot read {what} {path}: {first_line(exc)}") from exc
