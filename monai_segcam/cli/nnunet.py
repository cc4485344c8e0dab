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
slices through each map (``--no-png`` skips them) and ``<case>_segcam.json`` (inputs, model, settings, statistics).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..outputs import CAMWriter, safe_token, segmentation_file_name, write_nifti, write_png, write_text
from .io import CLIError, check_exists, read_image
from .model import resolve_device

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
        raise CLIError(str(exc).strip().splitlines()[0]) from exc


def _grid_region(text: str, model: Any, case: Any) -> tuple[Any, dict[str, Any]]:
    """The region for the engines on the preprocessed grid, and its description; voxels and boxes are given on the
    first input file's grid and mapped through nnU-Net's transpose, crop and resampling."""
    from monai_segcam.cam import Box, Component, Voxel

    from .explain import parse_region

    kind, points = parse_region(text)
    if kind == "component":
        return Component(index=points[0][0] if points else 0), {"kind": kind}
    if kind not in ("voxel", "box"):
        return kind, {"kind": kind}
    shape = tuple(reversed(case.properties["shape_before_cropping"]))  # the file's (I, J, K)
    for point in points:
        if len(point) != len(shape) or any(not 0 <= i < s for i, s in zip(point, shape)):
            raise CLIError(f"--region {kind}: voxel {point} lies outside the image (shape {shape})")
    corners = np.array(np.meshgrid(*[sorted({p[d] for p in points}) for d in range(3)], indexing="ij")).reshape(3, -1)
    grid = np.array(case.data.shape[1:])
    mapped = np.rint(model.file_voxels_to_grid(corners.T, case))
    start = np.clip(mapped.min(0), 0, grid - 1).astype(int)
    end = np.clip(mapped.max(0), 0, grid - 1).astype(int) + 1
    if kind == "voxel":
        return Voxel(tuple(start.tolist())), {"kind": kind, "input_voxel": list(points[0]), "voxel": start.tolist()}
    description = {"kind": kind, "input_corners": [list(p) for p in points], "start": start.tolist()}
    return Box(tuple(start.tolist()), tuple(end.tolist())), {**description, "end": end.tolist()}


def _stats(cam: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    total = float(cam.sum())
    return {
        "min": float(cam.min()),
        "max": float(cam.max()),
        "peak_voxel": [int(i) for i in peak],
        "peak_world_ras_mm": [round(float(v), 4) for v in (affine @ np.array([*peak, 1.0]))[:3]],
        "region_voxels": int(mask.sum()),
        "mass_in_region": float(cam[mask].sum() / total) if total > 0 else None,
    }


def _write_case(explanations: dict[str, Any], args: Namespace, name: str, writer: CAMWriter) -> list[dict[str, Any]]:
    """Write the segmentation and every map (NIfTI, PNG) of one case with the one writer's names; returns the
    written files' entries."""
    first = next(iter(explanations.values()))
    affine, seg = first.affine, first.segmentation
    dtype = np.uint8 if seg.max(initial=0) < 256 else np.uint16
    seg_path = os.path.join(writer.output_dir, segmentation_file_name(name))
    writer.record(write_nifti(seg, seg_path, affine, channel_dim=None, output_dtype=dtype))
    written: list[dict[str, Any]] = [{"file": segmentation_file_name(name), "kind": "segmentation"}]
    image = read_image(first.case.files[0])[0] if args.png else None
    for method, explanation in explanations.items():
        for layer, maps in explanation.maps.items():
            for c, cam in zip(explanation.classes, maps):
                mask = explanation.region[explanation.classes.index(c)]
                stats = _stats(cam, affine, mask)
                if args.normalize:
                    from monai_segcam.cam import normalize_cam

                    cam = normalize_cam(torch.from_numpy(cam)[None, None])[0, 0].numpy()
                path = writer.record(write_nifti(cam, writer.path(name, method, layer, c, ".nii.gz"), affine,
                                                 channel_dim=None))  # fmt: skip
                entry = {"class": c, "layer": layer, "module": explanation.result.modules.get(layer), "method": method}
                written.append({"file": os.path.basename(path), "kind": "cam", **entry, "stats": stats})
                if image is not None:
                    from monai_segcam.visualize import plot_orthogonal_slices

                    title = f"{name} | class {c} | {layer} | {method}"
                    fig = plot_orthogonal_slices(image, cam, region=mask, center=args.center, title=title)
                    path = writer.record(write_png(fig, writer.path(name, method, layer, c, ".png")))
                    fig.clear()
                    written.append({"file": os.path.basename(path), "kind": "png", **entry})
    return written


def _explain_case(files: list[str], label: str | None, name: str, model: Any, cams: dict[str, Any], args: Namespace,
                  writer: CAMWriter) -> dict[str, Any]:  # fmt: skip
    """Preprocess, predict and explain one case with every method, write its files; returns its JSON summary."""
    start = time.perf_counter()
    try:
        case = model.preprocess(files, label)
    except Exception as exc:
        raise CLIError(f"nnU-Net's preprocessing failed on {files[0]}: {str(exc).strip().splitlines()[0]}") from exc
    logits = model.predict(case.data)
    classes = args.classes if args.classes is not None else model.default_classes
    bad = [c for c in classes if not 0 <= c < logits.shape[0]]
    if bad:
        raise CLIError(f"--classes {bad} out of range: the model has {logits.shape[0]} output channels")
    region, region_summary = _grid_region(args.region, model, case)
    explanations = {}
    for method, cam in cams.items():
        try:
            explanations[method] = cam.explain(case, classes, region, logits)
        except ValueError as exc:
            raise CLIError(f"{files[0]}: {exc}") from exc
    written = _write_case(explanations, args, name, writer)
    seg = next(iter(explanations.values())).segmentation
    return {
        "case": name,
        "input": {"files": [os.path.abspath(f) for f in files], "label": None if label is None else os.path.abspath(label)},
        "shape": list(seg.shape),
        "affine": next(iter(explanations.values())).affine.tolist(),
        "network_input_shape": list(case.data.shape),
        "region_on_network_grid": region_summary,
        "classes": {str(c): model.class_names.get(c) for c in classes},
        "predicted_voxels": {str(c): int((seg == c).sum()) for c in np.unique(seg).tolist()},
        "files": written,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _description(model: Any, args: Namespace, device: torch.device) -> dict[str, Any]:
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
        "device": str(device),
    }


def run_explain_nnunet(args: Namespace) -> int:
    """Run ``monai-segcam explain --nnunet``; returns the exit status (1 when a case failed)."""
    from monai_segcam.nnunet import NNUNetSegCAM

    from .explain import _LABEL_REGIONS, parse_region

    given = [f"--{name.replace('_', '-')}" for name in _NOT_FOR_NNUNET if getattr(args, name, None) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} do not apply to --nnunet: the tiles and weights come from the model folder")
    check_exists(args.images, "image")
    device = resolve_device(args.device)
    model = _load(args, device)
    cases = group_cases(args.images, model.num_input_channels)
    labels: Sequence[str | None] = args.label if args.label is not None else [None] * len(cases)
    if args.label is None and parse_region(args.region)[0] in _LABEL_REGIONS:
        raise CLIError(f"--region {args.region} needs the ground truth: give --label FILE")
    if len(labels) != len(cases):
        raise CLIError(f"--label got {len(labels)} file(s) for {len(cases)} case(s): give one label per case")
    check_exists([p for p in labels if p is not None], "label")
    try:
        cams = {
            m: NNUNetSegCAM(model, args.layers, m, args.target, sw_batch_size=args.sw_batch_size or 1,
                            progress=not args.quiet)
            for m in args.method
        }  # fmt: skip
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise CLIError(f"--output {args.output} exists and is not a folder")
    os.makedirs(output, exist_ok=True)
    failed = 0
    for (name, files), label in zip(cases, labels):
        name = safe_token(name, "case")
        try:
            writer = CAMWriter(os.path.join(output, name), png=args.png, center=args.center)
            with writer.all_or_nothing():
                summary = _explain_case(files, label, name, model, cams, args, writer)
                summary["settings"] = _description(model, args, device)
                text = json.dumps(summary, indent=2) + "\n"
                writer.record(write_text(text, os.path.join(writer.output_dir, f"{name}_segcam.json")))
        except (CLIError, RuntimeError, ValueError) as exc:
            if len(cases) == 1 or args.debug:
                raise
            failed += 1
            print(f"monai-segcam: error: {name}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{name}: {len(summary['files']) + 1} files in {os.path.join(output, name)}")
    return 1 if failed else 0


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
