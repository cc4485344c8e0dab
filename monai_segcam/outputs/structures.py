# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The structure tables: per case ``<case>_structures.csv`` (:py:data:`STRUCTURE_COLUMNS`, one row per layer, method,
class and structure: :py:func:`~monai_segcam.metrics.structure_scores` of the map in each structure of a label map)
and across a data set ``segcam_structures.csv`` (:py:data:`COHORT_STRUCTURE_COLUMNS`: mean and spread per layer,
method, class and structure over the cases); their file names are spelled in :py:mod:`.names`."""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..metrics.structures import structure_masks, structure_scores
from .writer import write_text

__all__ = [
    "STRUCTURE_COLUMNS",
    "COHORT_STRUCTURE_COLUMNS",
    "label_structures",
    "structure_rows",
    "cohort_structure_rows",
    "write_structures",
    "write_cohort_structures",
    "read_structures",
]

STRUCTURE_COLUMNS = ("layer", "method", "class", "structure", "share", "density")
COHORT_STRUCTURE_COLUMNS = ("layer", "method", "class", "structure", "n", "share_mean", "share_std", "density_mean",
                            "density_std")  # fmt: skip

Row = dict[str, Any]


def label_structures(
    labels: Any, spatial_dims: int, multi_label: bool = False, names: Mapping[int, str] | None = None
) -> tuple[list[str], torch.Tensor]:
    """The structures of a label volume and their masks ``(S, *spatial)``.

    A label map ``(*spatial)`` or ``(1, *spatial)``: one structure per value present (the background ``0`` too);
    channels ``(C, *spatial)``: one structure per channel, the channels' argmax (one-hot or scores) or, with
    ``multi_label``, each channel ``> 0.5`` (independent masks). Structures are named by ``names`` (label value or
    channel -> name, e.g. a bundle's label names) where it has them, else by their value. Boolean channels are
    taken as independent masks.

    Example:
        >>> names, masks = label_structures(torch.tensor([[0, 1], [1, 2]]), 2, names={1: "liver"})
        >>> names, masks.shape
        (['0', 'liver', '2'], torch.Size([3, 2, 2]))
    """
    values = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu()
    values = values.as_tensor() if hasattr(values, "as_tensor") else values
    if values.ndim not in (spatial_dims, spatial_dims + 1):
        raise ValueError(f"a label volume of {spatial_dims} spatial dims is (*spatial) or (C, *spatial), got "
                         f"{tuple(values.shape)}.")  # fmt: skip
    names = dict(names or {})
    if values.ndim == spatial_dims + 1 and values.shape[0] > 1:
        ids = list(range(values.shape[0]))
        masks = values > 0.5 if multi_label or values.dtype == torch.bool else torch.stack([values.argmax(0) == c for c in ids])
    else:
        ids, masks = structure_masks(values.reshape(values.shape[-spatial_dims:]))
    return [names.get(s, str(s)) for s in ids], masks


def structure_rows(
    maps: Mapping[tuple[str, str], Any],
    classes: Sequence[int],
    labels: Any,
    multi_label: bool = False,
    names: Mapping[int, str] | None = None,
) -> list[Row]:
    """The rows of one case's structure table (:py:data:`STRUCTURE_COLUMNS`): per map, class and structure of
    ``labels`` (:py:func:`label_structures`), ``share`` and ``density``
    (:py:func:`~monai_segcam.metrics.structure_scores`). The maps and the label volume must share their grid: for
    files, the input file's own grid (after inversion).

    Args:
        maps: ``(layer, method) -> (len(classes), *spatial)``.
        classes: the maps' classes, channel by channel.
        labels: the label volume (the segmentation, a reference label or an atlas) on the maps' grid.
        multi_label: ``labels`` has independent channels (see :py:func:`label_structures`).
        names: label value (or channel) -> structure name.

    Example:
        .. code-block:: python

            rows = structure_rows(case.maps, case.classes, case.segmentation, names={1: "spleen"})
            write_structures("cams/case1/case1_structures.csv", rows)
    """
    rows: list[Row] = []
    masks = None
    for (layer, method), cam in maps.items():
        values = torch.as_tensor(np.asarray(cam, dtype=np.float64))
        if masks is None:
            structures, masks = label_structures(labels, values.ndim - 1, multi_label, names)
        if values.shape[0] != len(classes):
            raise ValueError(f"map {(layer, method)} has {values.shape[0]} channels for classes {list(classes)}.")
        share, density = structure_scores(values, masks)
        for j, c in enumerate(classes):
            rows += [{"layer": layer, "method": method, "class": c, "structure": s, "share": float(share[j, k]),
                      "density": float(density[j, k])} for k, s in enumerate(structures)]  # fmt: skip
    return rows


def cohort_structure_rows(rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Mean and standard deviation of ``share`` and ``density`` per (layer, method, class, structure) over the cases
    (each row of ``rows`` one case's, as :py:func:`structure_rows` gives them, with a ``case`` entry; a structure
    missing from a case is not counted for it: ``n`` says over how many cases).

    Example:
        .. code-block:: python

            write_cohort_structures("cams/segcam_structures.csv", cohort_structure_rows(all_rows))
    """
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (str(row["layer"]), str(row["method"]), str(row["class"]), str(row["structure"]))
        groups.setdefault(key, []).append(row)
    out = []
    for (layer, method, c, structure), members in sorted(groups.items()):
        line: Row = {"layer": layer, "method": method, "class": c, "structure": structure, "n": len(members)}
        for column in ("share", "density"):
            values = np.array([float(member[column]) for member in members], dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                line[f"{column}_mean"], line[f"{column}_std"] = float(values.mean()), float(values.std())
        out.append(line)
    return out


def _csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return stream.getvalue()


def write_structures(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> str:
    """Write one case's structure table (:py:data:`STRUCTURE_COLUMNS`) atomically; returns its path.

    Example:
        .. code-block:: python

            write_structures("cams/case1/case1_structures.csv", structure_rows(maps, [1], segmentation))
    """
    return write_text(_csv(rows, STRUCTURE_COLUMNS), path)


def write_cohort_structures(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> str:
    """Write the data set's structure table (:py:data:`COHORT_STRUCTURE_COLUMNS`, from
    :py:func:`cohort_structure_rows`) atomically; returns its path.

    Example:
        .. code-block:: python

            write_cohort_structures("cams/segcam_structures.csv", cohort_structure_rows(rows))
    """
    return write_text(_csv(rows, COHORT_STRUCTURE_COLUMNS), path)


def read_structures(path: str | os.PathLike) -> list[Row]:
    """The rows of a structure table (a case's or the data set's), numbers as floats (``n`` as an int).

    Example:
        .. code-block:: python

            rows = read_structures("cams/case1/case1_structures.csv")
    """
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        for key, value in row.items():
            if key in ("share", "density") or key.endswith(("_mean", "_std")):
                row[key] = float(value)
            elif key == "n":
                row[key] = int(value)
    return rows
