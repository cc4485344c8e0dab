# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``--structures`` and ``--structure-names`` of ``explain``: which label volume each case's structure table
(``<case>_structures.csv``) and the data set's ``segcam_structures.csv`` are computed in."""

from __future__ import annotations

import json
import os
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

from ..outputs import ExplainedCase
from .io import CLIError, check_exists

__all__ = ["SEGMENTATION", "LABEL", "NONE", "structure_source", "set_case_structures"]

SEGMENTATION, LABEL, NONE = "segmentation", "label", "none"


def structure_source(args: Namespace, labels: Sequence[str | None]) -> tuple[str, dict[int, str] | None]:
    """The checked ``--structures`` (``segmentation``, ``label``, ``none`` or a file) and ``--structure-names``."""
    source = getattr(args, "structures", SEGMENTATION) or SEGMENTATION
    if source == LABEL and any(label is None for label in labels):
        raise CLIError("--structures label needs the ground truth of every case: give --label FILE ...")
    if source not in (SEGMENTATION, LABEL, NONE):
        check_exists([source], "--structures")
    text = getattr(args, "structure_names", None)
    if text is None:
        return source, None
    try:
        names = json.loads(text)
        return source, {int(value): str(name) for value, name in names.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise CLIError(f"--structure-names must be a JSON object of label value -> name, got {text!r}") from exc


def set_case_structures(case: ExplainedCase, source: str, label: str | None, names: dict[int, str] | None) -> bool:
    """Give ``case`` its structures' label volume (the ``--label`` file or the ``--structures`` file, resampled
    nearest onto the input's grid; the segmentation: left ``None``) and names; returns whether to write the table."""
    if source == NONE:
        return False
    case.structure_names = names
    if source != SEGMENTATION:
        case.structures = _on_grid(label if source == LABEL else source, case.original)
    return True


def _on_grid(path: Any, original: Any) -> Any:
    from monai.transforms import ResampleToMatch

    from ..files.reading import read_image

    volume = read_image(os.fspath(path), "label")
    same = tuple(volume.shape[1:]) == tuple(original.shape[1:])
    if not same or not bool((volume.affine - original.affine).abs().max() < 1e-4):
        volume = ResampleToMatch(mode="nearest")(volume, original)
    return volume.as_tensor().round().long()
