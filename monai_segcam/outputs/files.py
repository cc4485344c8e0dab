# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Atomic files (the one atomic writer, :py:func:`~monai_segcam.utils.atomic.atomic_output`, and the clean-up of
its temporaries, exported here) and paths confined to an output folder."""

from __future__ import annotations

import os

from ..utils.atomic import _HOST as _HOST  # the temporaries' host tag
from ..utils.atomic import atomic_output, remove_stale_temporaries

__all__ = ["safe_path", "atomic_output", "remove_stale_temporaries"]


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
