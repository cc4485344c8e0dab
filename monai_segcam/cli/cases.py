# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The case loop of ``explain``, shared by its front doors (a MONAI bundle or network, an nnU-Net model folder): one
folder per case (its maps, PNGs and JSON summary) written all or none by the one writer, failed cases recorded and
skipped, the statistics CSV and the review report at the end."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from argparse import Namespace
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.utils import ensure_tuple, optional_import

from ..cam.regions import LABEL_REGIONS, parse_region
from ..inferers.segcam_inferer import result_layers
from ..metrics import STAT_COLUMNS
from ..outputs import CAMWriter, merge_rows, segmentation_file_name, table_rows, write_table, write_text
from .io import CLIError, check_exists

__all__ = ["Explained", "cam_settings", "case_labels", "check_classes", "output_folder", "run_cases", "write_cams"]

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
Row = dict[str, Any]
ExplainCase = Callable[[str, Any, "str | None", CAMWriter], "Explained"]


@dataclass
class Explained:
    """One case's maps, explained by a front door and ready to write.

    Attributes:
        name: the case name.
        original: the input as read, ``(C, *spatial)`` with its affine (the maps' geometry, the PNGs' background).
        maps: ``(layer, method) -> (len(classes), *spatial)`` on the input's grid.
        regions: per class ``(len(classes), *spatial)``, the mask drawn in the PNGs.
        rows: the case's statistics rows (:py:func:`~monai_segcam.outputs.case_rows`).
        classes: the explained classes.
        modules: layer key -> the network module it names (``None`` for occlusion's ``"input"``).
        summary: the front door's entries of the JSON summary (input, grids, region, predicted voxels).
        files: the JSON entries of files written besides the segmentation and the maps (the channel table).
    """

    name: str
    original: Any
    maps: dict[tuple[str, str], np.ndarray]
    regions: Any
    rows: list[Row]
    classes: list[int]
    modules: dict[str, str | None]
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)


def cam_settings(args: Namespace, engine: Any, device: torch.device) -> dict[str, Any]:
    """The JSON's settings every front door records; ``amp`` and ``activation_budget`` as the CAM ``engine`` runs."""
    amp, budget = engine.terms.amp, engine.activation_budget
    return {"methods": list(args.method), "region": args.region, "target": args.target, "amp": amp,
            "activation_budget": budget, "device": str(device)}  # fmt: skip


def case_labels(args: Namespace, count: int) -> list[str | None]:
    """The ``--label`` file of each of ``count`` cases (``None`` without labels), checked."""
    labels: list[str | None] = list(args.label) if args.label is not None else [None] * count
    if args.label is None and parse_region(args.region)[0] in LABEL_REGIONS:
        raise CLIError(f"--region {args.region} needs the ground truth: give --label FILE")
    if len(labels) != count:
        raise CLIError(f"--label got {len(labels)} file(s) for {count} case(s): give one label per case")
    check_exists([p for p in labels if p is not None], "label")
    return labels


def check_classes(classes: Sequence[int], channels: int) -> list[int]:
    """``classes`` when each is an output channel of the network, else a :py:class:`CLIError`."""
    bad = [c for c in classes if not 0 <= c < channels]
    if bad:
        raise CLIError(f"--classes {bad} out of range: the network has {channels} output channels")
    return list(classes)


def output_folder(args: Namespace) -> str:
    """The absolute ``--output`` folder, created."""
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise CLIError(f"--output {args.output} exists and is not a folder")
    os.makedirs(output, exist_ok=True)
    return output


def write_cams(writer: CAMWriter, case: Explained, class_names: dict[int, str], args: Namespace) -> list[dict]:
    """Write a case's maps as NIfTI/PNG (``--normalize``: min-max scaled) and its panels; records the files in its
    statistics rows; returns the JSON entries of the files (a map's with its statistics and peak)."""
    from monai_segcam.cam import normalize_cam

    original, classes = case.original, case.classes
    affine = np.asarray(original.affine, dtype=np.float64)
    maps = {key: np.asarray(cam, dtype=np.float32) for key, cam in case.maps.items()}
    if args.normalize:
        maps = {key: normalize_cam(torch.from_numpy(cam)[None])[0].numpy() for key, cam in maps.items()}
    rows = {(row["layer"], row["method"], row["class"]): row for row in case.rows}
    entries = []
    for method in dict.fromkeys(method for _, method in maps):
        shown = {layer: cam for (layer, m), cam in maps.items() if m == method}
        files = writer.write(case.name, method, shown, classes, affine, original[0], case.regions, class_names=class_names)
        for (layer, c), paths in files.items():
            row = rows[(layer, method, c)]
            row["files"] = ";".join(os.path.join(case.name, os.path.basename(path)) for path in paths)
            stats = {key: row[key] if row[key] == row[key] else None for key in STAT_COLUMNS}  # NaN: none
            stats.update(_peak(shown[layer][classes.index(c)], affine))
            for path in paths:
                kind = "png" if path.endswith(".png") else "cam"
                entry = {"file": os.path.basename(path), "kind": kind, "class": c, "layer": layer, "method": method}
                if kind == "cam":
                    module = case.modules.get(layer)
                    entry.update(class_name=class_names.get(c), stats=stats, normalized=args.normalize, module=module)
                entries.append(entry)
    if args.png and len(maps) > 1:
        for path, c in zip(writer.write_panels(case.name, original[0], maps, classes, case.regions), classes):
            entries.append({"file": os.path.basename(path), "kind": "png", "class": c, "layer": None, "method": None})
    return entries


def run_cases(
    cases: Sequence[tuple[str, Any, str | None]],
    explain: ExplainCase,
    layers: Sequence[str],
    args: Namespace,
    described: dict[str, Any] | None = None,
    class_names: dict[int, str] | None = None,
) -> int:
    """Explain and write every case ``(name, inputs, label file)`` with ``explain(name, inputs, label, writer)``
    (returns the case's :py:class:`Explained`) into ``--output``, with its ``<case>_segcam.json`` (the front door's
    entries, the files, and ``described``: model and settings), then the CSV and ``--report``; returns the exit
    status (1 when a case failed). One failed case leaves nothing behind, is recorded and does not stop the others
    (it raises when it is the only case, or with ``--debug``)."""
    output = output_folder(args)
    failed, rows = 0, []
    shown = tqdm(cases, desc="cases", unit="case") if has_tqdm and len(cases) > 1 and not args.quiet else cases
    for name, inputs, label in shown:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                case = _write_case(name, inputs, label, explain, output, args, described or {}, class_names or {})
                rows += case.rows
            except Exception as exc:  # one failed case leaves nothing behind, is recorded and does not stop the others
                if len(cases) == 1 or args.debug or not isinstance(exc, (CLIError, RuntimeError, ValueError)):
                    raise
                failed += 1
                source = inputs if isinstance(inputs, str) else inputs[0]
                reason = (str(exc) if isinstance(exc, CLIError) else f"{source}: {type(exc).__name__}: {exc}").strip()
                for method in args.method:  # occlusion's map is of the input, not of a layer
                    for layer in ensure_tuple(result_layers(method, list(layers))):
                        rows += table_rows(name, method, layer, args.classes or [""], status="failed", error=reason)
                _print(f"monai-segcam: error: {reason.splitlines()[0]}", error=True)
                continue
        if not args.quiet:
            for message in dict.fromkeys(str(w.message) for w in caught if args.debug or "monai_segcam" in w.filename):
                _print(f"warning: {name}: {message}", error=True)
            _print(f"{name}: {len(case.summary['files']) + 1} files in {os.path.join(output, name)}")
    write_table(os.path.join(output, "segcam_stats.csv"), merge_rows(rows))
    if getattr(args, "report", False):
        from monai_segcam.report.explain_output import report_from_explain_output

        reported = [n for n, _, _ in cases if os.path.isfile(os.path.join(output, n, f"{n}_segcam.json"))]
        index = report_from_explain_output(output, reported)
        if not args.quiet:
            _print(f"review report: {index}")
    if failed:
        _print(f"monai-segcam: error: {failed} of {len(cases)} case(s) failed", error=True)
    return 1 if failed else 0


def _write_case(
    name: str, inputs: Any, label: str | None, explain: ExplainCase, output: str, args: Namespace,
    described: dict[str, Any], class_names: dict[int, str],
) -> Explained:  # fmt: skip
    """One case's files and ``<case>_segcam.json`` in ``output/name``, all or none."""
    writer = CAMWriter(os.path.join(output, name), png=args.png, center=args.center)
    with writer.all_or_nothing():
        start = time.perf_counter()
        case = explain(name, inputs, label, writer)
        files = write_cams(writer, case, class_names, args)
        case.summary = {
            "case": name,
            **case.summary,
            "classes": {str(c): class_names.get(c) for c in case.classes},
            "files": [{"file": segmentation_file_name(name), "kind": "segmentation"}, *files, *case.files],
            "seconds": round(time.perf_counter() - start, 3),
            **described,
        }
        text = json.dumps(case.summary, indent=2, allow_nan=False) + "\n"
        writer.record(write_text(text, os.path.join(writer.output_dir, f"{name}_segcam.json")))
    return case


def _peak(cam: np.ndarray, affine: np.ndarray) -> dict[str, list]:
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    world = affine @ np.array([*peak, 1.0])
    return {"peak_voxel": [int(i) for i in peak], "peak_world_ras_mm": [round(float(v), 4) for v in world[:3]]}


def _print(message: str, error: bool = False) -> None:
    """Print without breaking tqdm progress bars."""
    stream = sys.stderr if error else sys.stdout
    (tqdm.write if has_tqdm else print)(message, file=stream)
