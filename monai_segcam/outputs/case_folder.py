# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""A case folder: one explained image file's segmentation, maps (NIfTI, PNG, panels), structure table
(``<case>_structures.csv``) and ``<case>_segcam.json``, written by the one writer (:py:class:`~monai_segcam.outputs.CAMWriter`) on the input file's own grid."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..metrics.statistics import STAT_COLUMNS
from .names import channel_table_file_name, segmentation_file_name, structures_file_name, summary_file_name
from .structures import structure_rows, write_structures
from .table import write_channel_table
from .writer import CAMWriter, write_text

__all__ = ["CaseSummary", "ExplainedCase", "write_case_folder"]


@dataclass(frozen=True)
class CaseSummary:
    """The file pipeline's part of ``<case>_segcam.json``, one layout for every pipeline (MONAI bundles and networks,
    :py:class:`~monai_segcam.files.FileSegCAM`; nnU-Net, :py:func:`~monai_segcam.nnunet.explain_nnunet_case`): the
    input (its files, voxel grid and label), the network input's grid, the region placed on it and the predicted
    voxels per class (:py:meth:`as_json`).

    Attributes:
        files: the input files (one per channel for nnU-Net; the first is the case's ``path``).
        shape: the input's spatial shape, the grid of every map written.
        channels: the input's channels.
        affine: the input's voxel-to-world (RAS) affine, 4x4.
        network_input_shape: the network input ``(C, *grid)``.
        region_on_network_grid: what :py:func:`~monai_segcam.files.grids.place_region` reports.
        predicted_voxels: class -> predicted voxels on the input's grid.
        label: the ground-truth file, or ``None``.
        network_input_affine: the network grid's voxel-to-world affine, or ``None`` where it has none (nnU-Net's
            cropped and resampled grid).

    Example:
        >>> summary = CaseSummary(["ct.nii.gz"], (4, 4, 4), 1, np.eye(4), (1, 4, 4, 4), {"kind": "pred"}, {"1": 9})
        >>> sorted(summary.as_json()["input"])
        ['affine', 'channels', 'files', 'label', 'path', 'shape']
    """

    files: Sequence[str]
    shape: Sequence[int]
    channels: int
    affine: Any
    network_input_shape: Sequence[int]
    region_on_network_grid: Mapping[str, Any]
    predicted_voxels: Mapping[str, int]
    label: str | None = None
    network_input_affine: Any = None

    def as_json(self) -> dict[str, Any]:
        """The JSON entries (absolute paths, lists): ``input`` (``path``, ``files``, ``shape``, ``channels``,
        ``affine``, ``label``), ``network_input_shape``, ``network_input_affine``, ``region_on_network_grid``,
        ``predicted_voxels``."""
        files = [os.path.abspath(os.fspath(f)) for f in self.files]
        network_affine = self.network_input_affine
        return {
            "input": {
                "path": files[0],
                "files": files,
                "shape": [int(s) for s in self.shape],
                "channels": int(self.channels),
                "affine": np.asarray(self.affine, dtype=np.float64).tolist(),
                "label": None if self.label is None else os.path.abspath(os.fspath(self.label)),
            },
            "network_input_shape": [int(s) for s in self.network_input_shape],
            "network_input_affine": None if network_affine is None else np.asarray(network_affine, np.float64).tolist(),
            "region_on_network_grid": dict(self.region_on_network_grid),
            "predicted_voxels": {str(c): int(n) for c, n in self.predicted_voxels.items()},
        }


@dataclass
class ExplainedCase:
    """One image file's maps on its own grid, ready to write (:py:func:`write_case_folder`).

    Attributes:
        name: the case name.
        original: the input as read, ``(C, *spatial)`` with its affine (the maps' geometry, the PNGs' background).
        maps: ``(layer, method) -> (len(classes), *spatial)`` on the input's grid.
        regions: per class ``(len(classes), *spatial)``, the explained region on the input's grid (taken there by
            :py:func:`~monai_segcam.outputs.region_on_grid`), drawn in the PNGs.
        segmentation: the predicted label map ``(*spatial)``, or per class ``(C, *spatial)`` (multi-label).
        rows: the case's statistics rows (:py:func:`~monai_segcam.outputs.case_rows`).
        classes: the explained classes.
        modules: layer key -> the network module it names (``None`` for occlusion's ``"input"``).
        summary: the pipeline's entries of the JSON summary (:py:meth:`CaseSummary.as_json`: input, grids, region,
            predicted voxels).
        files: the JSON entries of files written besides the segmentation, the maps and the channel table.
        channel_table: the input channels' attributions, written as ``<case>_channels.csv``: their ``rows``
            (:py:meth:`~monai_segcam.perturbation.ChannelAttributionResult.rows`), the ``channels``' names and the
            integrated-gradients ``steps``; ``None``: no table.
        structures: the label volume of the structure table on the input's grid (a reference label, an atlas:
            a label map or channels, see :py:func:`~monai_segcam.outputs.label_structures`); ``None``: the
            segmentation.
        structure_names: label value -> structure name; ``None``: the class names given to
            :py:func:`write_case_folder` (the bundle's label names).
        structure_rows: the structure table's rows once written (:py:func:`~monai_segcam.outputs.structure_rows`).
    """

    name: str
    original: Any
    maps: dict[tuple[str, str], np.ndarray]
    regions: Any
    segmentation: np.ndarray
    rows: list[dict[str, Any]]
    classes: list[int]
    modules: Mapping[str, str | None]
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    channel_table: dict[str, Any] | None = None
    structures: Any = None
    structure_names: Mapping[int, str] | None = None
    structure_rows: list[dict[str, Any]] = field(default_factory=list)


def write_case_folder(
    writer: CAMWriter,
    case: ExplainedCase,
    class_names: Mapping[int, str] | None = None,
    normalize: bool = False,
    described: Mapping[str, Any] | None = None,
    started: float | None = None,
    structures: bool = True,
) -> dict[str, Any]:
    """Write a case's segmentation, maps, channel table, structure table and ``<case>_segcam.json`` into
    ``writer.output_dir``; records each map's files in its statistics row. Call it inside
    ``writer.all_or_nothing()`` to keep a case all or none.

    Args:
        writer: the writer of the case's folder (its ``png`` and ``center`` settings are used).
        case: the explained case.
        class_names: class index -> name (PNG titles, JSON).
        normalize: min-max scale each written map to [0, 1].
        described: further JSON entries (e.g. the model and the settings).
        started: the ``time.perf_counter()`` at which the case began: the JSON records ``seconds`` since.
        structures: write ``<case>_structures.csv``, the share and density of each written map in each structure of
            ``case.structures`` (default: the segmentation), into ``case.structure_rows`` too.

    Returns:
        the JSON summary written: the case's ``summary``, its classes, the files (a map's with its statistics and
        peak) and ``described``.

    Example:
        .. code-block:: python

            writer = CAMWriter("cams/case1", png=True)
            with writer.all_or_nothing():
                summary = write_case_folder(writer, case, described={"model": {"bundle": "segcam_demo"}})
    """
    class_names = dict(class_names or {})
    affine = np.asarray(case.original.affine, dtype=np.float64)
    writer.write_segmentation(case.name, case.segmentation, affine)
    segmentations = [{"file": segmentation_file_name(case.name), "kind": "segmentation"}]
    if writer.dicom:
        writer.write_dicom_segmentation(case.name, case.segmentation, affine, _source(case), class_names)
        segmentations.append({"file": segmentation_file_name(case.name, ".dcm"), "kind": "dicom_seg"})
    files = _write_maps(writer, case, class_names, normalize) + _write_channel_table(writer, case)
    files += _write_structure_table(writer, case, class_names, normalize) if structures else []
    if writer.slicer:
        files += _write_slicer_scene(writer, case, files, class_names, normalize)
    summary = {
        "case": case.name,
        **case.summary,
        "classes": {str(c): class_names.get(c) for c in case.classes},
        "files": [*segmentations, *files, *case.files],
        **({} if started is None else {"seconds": round(time.perf_counter() - started, 3)}),
        **(described or {}),
    }
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    writer.record(write_text(text, os.path.join(writer.output_dir, summary_file_name(case.name))))
    return summary


def _write_maps(writer: CAMWriter, case: ExplainedCase, class_names: dict[int, str], normalize: bool) -> list[dict]:
    """The maps as NIfTI/PNG and the panels; returns their JSON entries."""
    original, classes = case.original, case.classes
    affine = np.asarray(original.affine, dtype=np.float64)
    maps = _written_maps(case, normalize)
    rows = {(row["layer"], row["method"], row["class"]): row for row in case.rows}
    entries = []
    for method in dict.fromkeys(method for _, method in maps):
        shown = {layer: cam for (layer, m), cam in maps.items() if m == method}
        files = writer.write(case.name, method, shown, classes, affine, original[0], case.regions,
                             class_names=class_names, source=_source(case))  # fmt: skip
        for (layer, c), paths in files.items():
            row = rows[(layer, method, c)]
            row["files"] = ";".join(os.path.join(case.name, os.path.basename(path)) for path in paths)
            stats = {key: row[key] if row[key] == row[key] else None for key in STAT_COLUMNS}  # NaN: none
            stats.update(_peak(shown[layer][classes.index(c)], affine))
            for path in paths:
                kind = {".png": "png", ".dcm": "dicom_map"}.get(os.path.splitext(path)[1], "cam")
                entry = {"file": os.path.basename(path), "kind": kind, "class": c, "layer": layer, "method": method}
                if kind != "png":
                    module = case.modules.get(layer)
                    entry.update(class_name=class_names.get(c), stats=stats, normalized=normalize, module=module)
                entries.append(entry)
    if writer.png and len(maps) > 1:
        panels = writer.write_panels(case.name, original[0], maps, classes, case.regions, affine)
        for path, c in zip(panels, classes):
            entries.append({"file": os.path.basename(path), "kind": "png", "class": c, "layer": None, "method": None})
    return entries


def _written_maps(case: ExplainedCase, normalize: bool) -> dict[tuple[str, str], np.ndarray]:
    """The maps as the case folder holds them: float32, min-max scaled with ``normalize``."""
    from monai_segcam.cam import normalize_cam

    maps = {key: np.asarray(cam, dtype=np.float32) for key, cam in case.maps.items()}
    if normalize:
        maps = {key: normalize_cam(torch.from_numpy(cam)[None])[0].numpy() for key, cam in maps.items()}
    return maps


def _write_structure_table(writer: CAMWriter, case: ExplainedCase, class_names: dict[int, str], normalize: bool):
    """``<case>_structures.csv`` of the maps as written in the case's structures; returns its JSON entry."""
    labels = case.segmentation if case.structures is None else case.structures
    names = class_names if case.structure_names is None else dict(case.structure_names)
    case.structure_rows = structure_rows(_written_maps(case, normalize), case.classes, labels, names=names)
    file_name = structures_file_name(case.name)
    writer.record(write_structures(os.path.join(writer.output_dir, file_name), case.structure_rows))
    source = "segmentation" if case.structures is None else "given"
    return [{"file": file_name, "kind": "structures", "labels": source}]


def _write_channel_table(writer: CAMWriter, case: ExplainedCase) -> list[dict]:
    """``<case>_channels.csv`` when the case has a channel table; returns its JSON entry."""
    if case.channel_table is None:
        return []

    file_name, table = channel_table_file_name(case.name), case.channel_table
    writer.record(write_channel_table(table["rows"], os.path.join(writer.output_dir, file_name)))
    return [{"file": file_name, "kind": "channel_table", "channels": table["channels"], "steps": table["steps"]}]


def _write_slicer_scene(
    writer: CAMWriter, case: ExplainedCase, entries: list[dict], class_names: dict[int, str], normalize: bool
) -> list[dict]:
    """``<case>_colors.ctbl`` and ``<case>_scene.mrml`` over the case's NIfTI maps; returns their JSON entries."""
    from .slicer import write_color_table, write_slicer_scene

    labels = np.asarray(case.segmentation).ndim == 3  # a label map (multi-label masks are not one)
    classes = range(int(np.asarray(case.segmentation).max(initial=0)) + 1) if labels else [0, *case.classes]
    color_table = writer.record(write_color_table(os.path.join(writer.output_dir, f"{case.name}_colors.ctbl"),
                                                  list(classes), class_names))  # fmt: skip
    shown = []
    for entry in (e for e in entries if e["kind"] == "cam"):
        cam = np.asarray(case.maps[(entry["layer"], entry["method"])][case.classes.index(entry["class"])])
        name = f"{entry['method']} {entry['layer']} class {entry['class']}"
        shown.append((entry["file"], name, 1.0 if normalize else float(cam.max(initial=0.0))))
    source = _source(case)
    image = os.fspath(source[0] if isinstance(source, (list, tuple)) else source)
    segmentation = segmentation_file_name(case.name) if labels else None
    scene = write_slicer_scene(writer.output_dir, case.name, image, shown, segmentation, color_table)
    writer.record(scene)
    written = ((color_table, "slicer_colors"), (scene, "slicer_scene"))
    return [{"file": os.path.basename(path), "kind": kind} for path, kind in written]


def _source(case: ExplainedCase) -> Any:
    """The file or DICOM series folder the case was read from."""
    return getattr(case.original, "meta", {}).get("filename_or_obj")


def _peak(cam: np.ndarray, affine: np.ndarray) -> dict[str, list]:
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    world = affine @ np.array([*peak, 1.0])
    return {"peak_voxel": [int(i) for i in peak], "peak_world_ras_mm": [round(float(v), 4) for v in world[:3]]}
