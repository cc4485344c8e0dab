# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The case loop of ``explain``, shared by its front doors (a MONAI bundle or network, an nnU-Net model folder): one
folder per case (:py:func:`~monai_segcam.outputs.write_case_folder`) written all or none, failed cases recorded and
skipped, the statistics CSV and the review report at the end."""

from __future__ import annotations

import os
import sys
import time
import warnings
from argparse import Namespace
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.utils import optional_import

from ..cam.regions import LABEL_REGIONS, parse_region
from ..outputs import (
    STATS_CSV,
    STRUCTURES_CSV,
    CAMWriter,
    ExplainedCase,
    cohort_structure_rows,
    merge_rows,
    summary_file_name,
    table_rows,
    write_case_folder,
    write_cohort_structures,
    write_table,
)
from .io import CLIError
from .structures import set_case_structures, structure_source

__all__ = ["cam_settings", "case_labels", "check_formats", "output_folder", "run_cases"]

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
ExplainCase = Callable[[str, Any, "str | None"], ExplainedCase]


def cam_settings(args: Namespace, settings: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """The JSON's settings every front door records; ``amp`` and ``activation_budget`` as the first explainer runs
    (its :py:meth:`~monai_segcam.cam.base.Explainer.settings`; no budget for explainers without one)."""
    amp, budget = settings.get("amp", False), settings.get("activation_budget")
    return {"methods": list(args.method), "region": args.region, "target": args.target, "amp": amp,
            "activation_budget": budget, "device": str(device)}  # fmt: skip


def case_labels(args: Namespace, count: int) -> list[str | None]:
    """The ``--label`` file of each of ``count`` cases (``None`` without labels), one per case."""
    labels: list[str | None] = list(args.label) if args.label is not None else [None] * count
    if args.label is None and parse_region(args.region)[0] in LABEL_REGIONS:
        raise CLIError(f"--region {args.region} needs the ground truth: give --label FILE")
    if len(labels) != count:
        raise CLIError(f"--label got {len(labels)} file(s) for {count} case(s): give one label per case")
    return labels  # a missing file fails its own case (recorded), the batch goes on


def check_formats(args: Namespace, inputs: Sequence[Any]) -> None:
    """``--format``: DICOM output needs each input to be a DICOM series (checked before any prediction), and the
    report and the Slicer scene read the NIfTI maps."""
    formats = getattr(args, "format", ["nifti"])
    for option in ("report", "slicer"):
        if getattr(args, option, False) and "nifti" not in formats:
            raise CLIError(f"--{option} reads the NIfTI maps: add nifti to --format (e.g. --format nifti dicom)")
    if "dicom" not in formats:
        return
    from monai_segcam.outputs import dicom_series

    for source in inputs:
        try:
            dicom_series(source if isinstance(source, str) or len(source) != 1 else source[0])
        except (ImportError, ValueError, OSError) as exc:
            raise CLIError(str(exc)) from exc


def output_folder(args: Namespace) -> str:
    """The absolute ``--output`` folder, created."""
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise CLIError(f"--output {args.output} exists and is not a folder")
    os.makedirs(output, exist_ok=True)
    return output


def run_cases(
    cases: Sequence[tuple[str, Any, str | None]],
    explain: ExplainCase,
    keys: Mapping[str, Sequence[str]],
    args: Namespace,
    described: dict[str, Any] | None = None,
    class_names: dict[int, str] | None = None,
) -> int:
    """Explain every case ``(name, inputs, label file)`` with ``explain(name, inputs, label)`` (returns its
    :py:class:`~monai_segcam.outputs.ExplainedCase`) and write its folder in ``--output``, its JSON with
    ``described`` (model and settings), then the CSV and ``--report``; ``keys``: each method's result keys (the
    rows of a failed case); returns the exit
    status (1 when a case failed). One failed case leaves nothing behind, is recorded and does not stop the others
    (it raises when it is the only case, or with ``--debug``)."""
    check_formats(args, [inputs for _, inputs, _ in cases])
    structures = structure_source(args, [label for _, _, label in cases])
    created = not os.path.exists(os.path.abspath(args.output))
    output = output_folder(args)
    try:
        return _run_cases(cases, explain, keys, args, output, described or {}, class_names or {}, structures)
    finally:  # a command that wrote nothing leaves no empty --output folder behind
        if created and os.path.isdir(output) and not os.listdir(output):
            os.rmdir(output)


def _run_cases(
    cases: Sequence[tuple[str, Any, str | None]], explain: ExplainCase, keys: Mapping[str, Sequence[str]],
    args: Namespace,
    output: str, described: dict[str, Any], class_names: dict[int, str], structures: Any,
) -> int:  # fmt: skip
    failed, rows, structure_rows = 0, [], []
    shown = tqdm(cases, desc="cases", unit="case") if has_tqdm and len(cases) > 1 and not args.quiet else cases
    for name, inputs, label in shown:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if not args.debug:  # nor third-party deprecations (an "always" here would also print ITK's at exit)
                warnings.simplefilter("ignore", DeprecationWarning)
            try:
                case = _write_case(name, inputs, label, explain, output, args, described, class_names, structures)
                rows += case.rows
                structure_rows += [{"case": name, **row} for row in case.structure_rows]
            except Exception as exc:  # one failed case leaves nothing behind, is recorded and does not stop the others
                if len(cases) == 1 or args.debug:
                    raise
                failed += 1
                source = inputs if isinstance(inputs, str) else inputs[0]
                reason = (str(exc) if isinstance(exc, CLIError) else f"{source}: {type(exc).__name__}: {exc}").strip()
                for method, result_keys in keys.items():  # each explainer's result keys (method -> keys)
                    for layer in result_keys:
                        rows += table_rows(name, method, layer, args.classes or [""], status="failed", error=reason)
                _print(f"monai-segcam: error: {reason.splitlines()[0]}", error=True)
                continue
        if not args.quiet:
            for message in dict.fromkeys(str(w.message) for w in caught if args.debug or "monai_segcam" in w.filename):
                _print(f"warning: {name}: {message}", error=True)
            _print(f"{name}: {len(case.summary['files']) + 1} files in {os.path.join(output, name)}")
    write_table(os.path.join(output, STATS_CSV), merge_rows(rows))
    if structure_rows:
        write_cohort_structures(os.path.join(output, STRUCTURES_CSV), cohort_structure_rows(structure_rows))
    if getattr(args, "report", False):
        from monai_segcam.report.explain_output import report_from_explain_output

        reported = [n for n, _, _ in cases if os.path.isfile(os.path.join(output, n, summary_file_name(n)))]
        index = report_from_explain_output(output, reported)
        if not args.quiet:
            _print(f"review report: {index}")
    if failed:
        _print(f"monai-segcam: error: {failed} of {len(cases)} case(s) failed", error=True)
    return 1 if failed else 0


def _write_case(
    name: str, inputs: Any, label: str | None, explain: ExplainCase, output: str, args: Namespace,
    described: dict[str, Any], class_names: dict[int, str], structures: tuple[str, Any],
) -> ExplainedCase:  # fmt: skip
    """One case's folder ``output/name`` (:py:func:`~monai_segcam.outputs.write_case_folder`), all or none."""
    formats = getattr(args, "format", ["nifti"])
    writer = CAMWriter(os.path.join(output, name), "nifti" in formats, args.png, args.center, dicom="dicom" in formats,
                       slicer=getattr(args, "slicer", False))  # fmt: skip
    with writer.all_or_nothing():
        start = time.perf_counter()
        try:
            case = explain(name, inputs, label)
        except (ValueError, FileNotFoundError) as exc:  # the pipelines' errors about the user's files and options
            raise CLIError(str(exc)) from exc
        table = set_case_structures(case, structures[0], label, structures[1])
        case.summary = write_case_folder(writer, case, class_names, args.normalize, described, start, table)
    return case


def _print(message: str, error: bool = False) -> None:
    """Print without breaking tqdm progress bars."""
    stream = sys.stderr if error else sys.stdout
    (tqdm.write if has_tqdm else print)(message, file=stream)
