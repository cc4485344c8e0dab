# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain IMAGE... --nnunet MODEL_FOLDER``: Seg-CAMs of an nnU-Net v2 model as nnU-Net predicts.

``MODEL_FOLDER`` is nnU-Net's ``<trainer>__<plans>__<configuration>/`` or a MONAI bundle converted from it
(``monai.apps.nnunet.convert_nnunet_to_monai_bundle``).

Images are cases named as nnU-Net names them: one file per channel, ``case_0000.nii.gz``, ``case_0001.nii.gz``, ...
(give all of a case's files, or a folder of cases); a single-channel model also takes a file without the suffix.
The model folder's plans do the rest: nnU-Net's preprocessing, its tiles and Gaussian, the mirroring axes of the
checkpoint (``--no-mirroring`` turns them off) and the mean of the chosen folds (``--folds``; default every fold with
a checkpoint). The region comes from nnU-Net's own prediction; the maps go back to each input's voxel grid with
nnU-Net's inverse of its resampling and cropping.

Per case, ``OUTPUT/<case>/`` receives ``<case>_seg.nii.gz`` (nnU-Net's segmentation),
``<case>_cam_<method>_<layer>_class<c>.nii.gz`` (one float map per class, layer and method, the input's affine), PNG
slices through each map (``--no-png`` skips them) and ``<case>_segcam.json`` (inputs, model, settings, statistics);
``OUTPUT/segcam_stats.csv`` gets the statistics rows, as for every front door (the maps on the input's grid).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from argparse import Namespace
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from ..outputs import CAMWriter, case_rows, safe_token, segmentation_file_name, write_nifti
from .cases import Explained, case_labels, check_classes, run_cases, write_cams
from .explain import cam_options
from .io import CLIError, check_exists, first_line, read_image
from .model import resolve_device
from .regions import grid_region

__all__ = ["add_nnunet_arguments", "group_cases", "run_explain_nnunet", "run_layers_nnunet"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".tif", ".tiff", ".png")
_NOT_FOR_NNUNET = ("roi_size", "overlap", "mode", "checkpoint")


def add_nnunet_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--nnunet`` (the folder itself is one of the model sources)."""
    group = parser.add_argument_group("nnU-Net v2 model folder (with --nnunet)")
    group.add_argument(
        "--folds", nargs="+", metavar="K", help="folds whose logits are averaged (default: every fold with a checkpoint)"
    )
    group.add_argument(
        "--no-mirroring", action="store_true", help="no test-time mirroring (default: the checkpoint's mirroring axes)"
    )
    group.add_argument(
        "--nnunet-checkpoint", metavar="NAME",
        help="checkpoint file in each fold folder (default: checkpoint_final.pth; model.pt in a MONAI bundle)",
    )  # fmt: skip
    group.add_argument("--tile-step-size", type=float, default=0.5, help="nnU-Net's tile step (default 0.5)")


def _split_name(path: str) -> tuple[str, str]:
    base = os.path.basename(os.path.normpath(path))
    for ending in _ENDINGS:
        if base.lower().endswith(ending):
            return base[: -len(ending)], base[len(base) - len(ending) :]
    return base, ""


def group_cases(paths: Sequence[str], num_channels: int) -> list[tuple[str, list[str]]]:
    """Cases ``(identifier, files in channel order)`` from files named ``<case>_<XXXX><ending>`` or folders of them.

    A single-channel model also takes files without the channel suffix (each its own case).

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
            raise CLIError(f"{path}: nnU-Net names the {num_channels} channel files of a case <case>_0000{ending}, ...")
        channels = cases.setdefault(match.group("case"), {})
        if int(match.group("channel")) in channels:
            raise CLIError(f"{path}: channel {match.group('channel')} of case {match.group('case')} given twice")
        channels[int(match.group("channel"))] = path
    grouped = []
    for case, channels in cases.items():
        if sorted(channels) != list(range(num_channels)):
            found = ", ".join(f"{c:04d}" for c in sorted(channels))
            raise CLIError(f"case {case}: the model needs channels 0000..{num_channels - 1:04d}, got {found}")
        grouped.append((case, [channels[c] for c in range(num_channels)]))
    if not grouped:
        raise CLIError("no image files found in the given paths")
    return grouped


def _load(args: Namespace, device: torch.device, folds: Sequence[int | str] | None = None) -> Any:
    from monai_segcam.nnunet import NNUNetModel

    folds = folds if folds is not None else args.folds
    folds = None if folds is None else [int(f) if str(f).isdigit() else str(f) for f in folds]
    try:
        return NNUNetModel(
            args.nnunet, folds, args.nnunet_checkpoint, not args.no_mirroring, args.tile_step_size, device=device
        )
    except (ImportError, FileNotFoundError, NotImplementedError, ValueError, RuntimeError) as exc:
        raise CLIError(first_line(exc)) from exc


def _explain_case(
    name: str, files: list[str], label: str | None, writer: CAMWriter, model: Any, cams: dict[str, Any], args: Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Preprocess, predict and explain one case with every method, write its files with ``writer``; returns its JSON
    summary and its statistics rows (:py:func:`~monai_segcam.metrics.cam_statistics` on the input's grid)."""
    start = time.perf_counter()
    try:
        case = model.preprocess(files, label)
    except Exception as exc:
        raise CLIError(f"nnU-Net's preprocessing failed on {files[0]}: {first_line(exc)}") from exc
    logits = model.predict(case.data)
    classes = check_classes(args.classes if args.classes is not None else model.default_classes, logits.shape[0])
    shape = tuple(reversed(case.properties["shape_before_cropping"]))  # the file's (I, J, K)
    to_grid = partial(model.file_voxels_to_grid, case=case)
    region, region_summary = grid_region(args.region, shape, case.data.shape[1:], to_grid)
    explanations, rows = {}, []
    for method, cam in cams.items():
        try:
            explanations[method] = explained = cam.explain(case, classes, region, logits)
        except ValueError as exc:
            raise CLIError(f"{files[0]}: {exc}") from exc
        rows += case_rows(name, method, explained.maps, classes, explained.region)[0]
    first = next(iter(explanations.values()))
    seg = first.segmentation
    dtype = np.uint8 if seg.max(initial=0) < 256 else np.uint16
    seg_path = os.path.join(writer.output_dir, segmentation_file_name(name))
    writer.record(write_nifti(seg, seg_path, first.affine, channel_dim=None, output_dtype=dtype))
    maps = {(layer, m): cam for m, explained in explanations.items() for layer, cam in explained.maps.items()}
    modules = {k: v for explained in explanations.values() for k, v in explained.result.modules.items()}
    original = read_image(files[0])
    written = write_cams(writer, Explained(name, original, maps, first.region, rows, classes, modules),
                         model.class_names, args)  # fmt: skip
    inputs = {"path": os.path.abspath(files[0]), "files": [os.path.abspath(f) for f in files]}
    summary = {
        "case": name,
        "input": {**inputs, "label": None if label is None else os.path.abspath(label)},
        "shape": list(seg.shape),
        "affine": first.affine.tolist(),
        "network_input_shape": list(case.data.shape),
        "region_on_network_grid": region_summary,
        "classes": {str(c): model.class_names.get(c) for c in classes},
        "predicted_voxels": {str(c): int((seg == c).sum()) for c in np.unique(seg).tolist()},
        "files": [{"file": segmentation_file_name(name), "kind": "segmentation"}, *written],
        "seconds": round(time.perf_counter() - start, 3),
    }
    return summary, rows


def _description(model: Any, args: Namespace, device: torch.device, engine: Any) -> dict[str, Any]:
    """The JSON's ``settings``; ``amp`` and ``activation_budget`` as the CAM ``engine`` runs them."""
    return {
        "nnunet_model_folder": os.path.abspath(model.folder),
        "trainer": model.trainer_name,
        "configuration": model.configuration_name,
        "folds": [str(f) for f in model.folds],
        "checkpoint": model.checkpoint_name,
        "mirror_axes": list(model.mirror_axes),
        "patch_size": list(model.patch_size),
        "tile_step_size": model.tile_step_size,
        "layers": list(args.layers),
        "methods": list(args.method),
        "region": args.region,
        "target": args.target,
        "amp": engine.terms.amp,
        "activation_budget": engine.activation_budget,
        "device": str(device),
    }


def run_explain_nnunet(args: Namespace) -> int:
    """Run ``monai-segcam explain --nnunet``; returns the exit status (1 when a case failed)."""
    from monai_segcam.nnunet import NNUNetSegCAM

    given = [f"--{name.replace('_', '-')}" for name in _NOT_FOR_NNUNET if getattr(args, name, None) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} do not apply to --nnunet: the tiles and weights come from the model folder")
    check_exists(args.images, "image")
    device = resolve_device(args.device)
    model = _load(args, device)
    grouped = group_cases(args.images, model.num_input_channels)
    labels = case_labels(args, len(grouped))
    try:
        cams = {
            m: NNUNetSegCAM(model, args.layers, m, args.target, sw_batch_size=args.sw_batch_size or 1,
                            progress=not args.quiet, **cam_options(args))
            for m in args.method
        }  # fmt: skip
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    settings = _description(model, args, device, next(iter(cams.values())).engine)

    def explain(name: str, files: list[str], label: str | None, writer: CAMWriter) -> tuple[dict[str, Any], list]:
        summary, rows = _explain_case(name, files, label, writer, model, cams, args)
        return {**summary, "settings": settings}, rows

    cases = [(safe_token(name, "case"), files, label) for (name, files), label in zip(grouped, labels)]
    return run_cases(cases, explain, list(args.layers), args)


def run_layers_nnunet(args: Namespace) -> int:
    """Run ``monai-segcam layers --nnunet``: the layer table of the model's network and its role presets."""
    from monai_segcam.cam import list_layers
    from monai_segcam.nnunet import nnunet_layer_presets

    device = resolve_device(args.device)
    model = _load(args, device, folds=args.folds[:1] if args.folds else None)
    network = model.networks[0]
    shape = args.input_shape or [1, model.num_input_channels, *model.patch_size]
    if not args.quiet:
        print(list_layers(network, shape, device))
        print(f"\npresets ({type(network).__name__}):")
        for role, name in nnunet_layer_presets(network).items():
            print(f"  {role:<12} -> {name}")
    return 0
