# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Cases as nnU-Net names them: one file per input channel, ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ..."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["group_cases"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".tif", ".tiff", ".png")


def _split_name(path: str) -> tuple[str, str]:
    base = os.path.basename(os.path.normpath(path))
    for ending in _ENDINGS:
        if base.lower().endswith(ending):
            return base[: -len(ending)], base[len(base) - len(ending) :]
    return base, ""


def group_cases(paths: Sequence[str], num_channels: int) -> list[tuple[str, list[str]]]:
    """Cases ``(identifier, files in channel order)`` from files named ``<case>_<XXXX><ending>`` or folders of them
    (e.g. nnU-Net's ``imagesTs/``), for :py:meth:`NNUNetModel.preprocess` and :py:class:`NNUNetSegCAM`.

    A single-channel model also takes files without the channel suffix (each its own case).

    Raises:
        ValueError: a file without the channel suffix (for several channels), a channel given twice or missing, or
            no image file at all.

    Example:
        >>> group_cases(["a_0001.nii.gz", "a_0000.nii.gz"], 2)
        [('a', ['a_0000.nii.gz', 'a_0001.nii.gz'])]
    """
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path) if _split_name(f)[1])
        else:
            files.append(path)
    cases: dict[str, dict[int, str]] = {}
    for path in files:
        stem, ending = _split_name(path)
        match = _CHANNEL.match(stem)
        if match is None and num_channels == 1:
            cases.setdefault(stem, {})[0] = path
            continue
        if match is None:
            raise ValueError(f"{path}: nnU-Net names the {num_channels} channel files of a case <case>_0000{ending}, ...")
        channels = cases.setdefault(match.group("case"), {})
        if int(match.group("channel")) in channels:
            raise ValueError(f"{path}: channel {match.group('channel')} of case {match.group('case')} given twice")
        channels[int(match.group("channel"))] = path
    grouped = []
    for case, channels in cases.items():
        if sorted(channels) != list(range(num_channels)):
            found = ", ".join(f"{c:04d}" for c in sorted(channels))
            raise ValueError(f"case {case}: the model needs channels 0000..{num_channels - 1:04d}, got {found}")
        grouped.append((case, [channels[c] for c in range(num_channels)]))
    if not grouped:
        raise ValueError("no image files found in the given paths")
    return grouped
