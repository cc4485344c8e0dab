# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``monai-segcam explain``: Seg-CAMs of image files, written on each input's own voxel grid.

Per case (one input image) the command writes, into ``OUTPUT/<case>/``:

- ``<case>_seg.nii.gz``: the segmentation (argmax of the stitched logits; for multi-label networks one channel per
  class, logit > 0, stored as ``(X, Y, Z, C)``);
- ``<case>_cam_<method>_<layer>_class<c>.nii.gz``: one float map per class, layer and method (the same names as
  the bundles' :py:class:`~monai_segcam.handlers.SegCAMHandler` writes);
- ``<case>_cam_<method>_<layer>_class<c>.png``: orthogonal slices through the map's peak (or the region centroid),
  and ``<case>_cam_class<c>_panel.png`` (layers x methods) when several maps explain a class;
- ``<case>_segcam.json``: inputs, model, settings and, per written file, its class/layer/method and statistics.

Every NIfTI has the input's shape and affine: the bundle's preprocessing is inverted with MONAI's ``Invertd``.
Files are written into a temporary folder inside ``OUTPUT`` and moved in place when the case is complete.
"""

from __future__ import annotations

import os
import time
import warnings
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .io import CLIError, case_names, check_exists, read_image, sanitize, staged_directory, write_json, write_nifti
from .model import LoadedModel, load_model, resolve_device

__all__ = ["parse_region", "run_explain"]

_LABEL_REGIONS = ("label", "fp", "fn")
_REGIONS = ("pred", "all", "empty", "label", "fp", "fn", "component")
_REGION_FORMS = "component:N, voxel:I,J,K or box:I0,J0,K0:I1,J1,K1"


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of voxel indices") from None


def parse_region(text: str) -> tuple[str, list[tuple[int, ...]]]:
    """Parse a ``--region`` value into its kind and its voxel-index arguments.

    Kinds: ``pred``, ``all``, ``empty``, ``label``, ``fp``, ``fn``, ``component[:N]`` (the N-th largest component,
    0 = largest), ``voxel:I,J,K`` (one voxel) and ``box:I0,J0,K0:I1,J1,K1`` (two opposite corner voxels, both
    included); voxel indices are those of the input file, in the order nibabel and MONAI read them.

    Example:
        >>> parse_region("box:4,5,3:10,12,8")
        ('box', [(4, 5, 3), (10, 12, 8)])
    """
    kind, *parts = text.split(":")
    if kind == "component" and len(parts) <= 1 and all(p.isdigit() for p in parts):
        return kind, [(int(parts[0]),)] if parts else []
    if kind in _REGIONS and kind != "component" and not parts:
        return kind, []
    if kind in ("voxel", "box") and len(parts) == (1 if kind == "voxel" else 2):
        points = [_indices(part) for part in parts]
        if any(len(point) != len(points[0]) for point in points):
            raise ValueError(f"{text!r}: both corners need the same number of indices")
        return kind, points
    raise ValueError(f"unknown region {text!r}: use one of {', '.join(_REGIONS)}, or {_REGION_FORMS}")


def _to_network_grid(points: np.ndarray, original: Any, image: Any) -> np.ndarray:
    """Continuous voxel coordinates on the network input's grid of voxel ``points`` ``(N, D)`` of the input file."""
    spatial = points.shape[1]
    source = np.asarray(original.affine, dtype=np.float64)
    target = np.asarray(image.affine, dtype=np.float64)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (homogeneous @ source.T @ np.linalg.inv(target).T)[:, :spatial]


def _region(parsed: tuple[str, list[tuple[int, ...]]], original: Any, image: Any) -> tuple[Any, dict[str, Any]]:
    """The region object for the engines, and its description for the JSON summary.

    A ``voxel`` or ``box`` given on the input file's grid is moved onto the network input's grid through both
    affines (the bundle's preprocessing may reorient and resample): the voxel nearest to the same world position,
    and the smallest box holding the nearest voxels of the corners.
    """
    from monai_segcam.cam import Box, Component, Voxel

    kind, points = parsed
    if kind == "component":
        return Component(index=points[0][0] if points else 0), {"kind": kind}
    if kind not in ("voxel", "box"):
        return kind, {"kind": kind}
    shape, grid = tuple(original.shape[1:]), tuple(image.shape[1:])
    for point in points:
        if len(point) != len(shape) or any(not 0 <= i < s for i, s in zip(point, shape)):
            raise CLIError(f"--region {kind}: voxel {point} lies outside the image (shape {shape})")
    corners = np.array(np.meshgrid(*[sorted({p[d] for p in points}) for d in range(len(shape))], indexing="ij"))
    mapped = np.rint(_to_network_grid(corners.reshape(len(shape), -1).T.astype(np.float64), original, image))
    start = np.clip(mapped.min(0), 0, np.array(grid) - 1).astype(int)
    end = np.clip(mapped.max(0), 0, np.array(grid) - 1).astype(int) + 1
    if kind == "voxel":
        return Voxel(tuple(start.tolist())), {"kind": kind, "input_voxel": list(points[0]), "voxel": start.tolist()}
    description = {"kind": kind, "input_corners": [list(p) for p in points], "start": start.tolist()}
    return Box(tuple(start.tolist()), tuple(end.tolist())), {**description, "end": end.tolist()}


def _engines(model: LoadedModel, args: Namespace, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """One ``SlidingWindowSegCAM`` per method, with the bundle inferer's window settings unless overridden.

    Returns:
        the sliding-window engine whose ``predict`` gives the stitched logits shared by all methods, and the engines
        by method.
    """
    from monai.inferers import SlidingWindowInferer

    from monai_segcam.cam import SlidingWindowSegCAM

    roi_size = None if args.roi_size is None else args.roi_size[0] if len(args.roi_size) == 1 else tuple(args.roi_size)
    overrides = {
        "roi_size": roi_size,
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "mode": args.mode,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    common = {
        "layers": list(args.layers),
        "target": args.target,
        "multi_label": model.multi_label,
        "sw_device": device,
        "device": None,
        "progress": not args.quiet,
        **overrides,
    }
    engines = {}
    for method in args.method:
        try:
            if isinstance(model.inferer, SlidingWindowInferer):
                engines[method] = SlidingWindowSegCAM.from_inferer(
                    model.inferer, model.network, method=method, **common
                )
            else:
                engines[method] = SlidingWindowSegCAM(model.network, **{"roi_size": -1, **common, "method": method})
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
    return next(iter(engines.values())), engines


def _preprocess(path: str, original: Any, model: LoadedModel, args: Namespace) -> Any:
    """The network input ``(C, *spatial)``: the bundle's image transforms, or intensity scaling of ``original``."""
    if model.preprocessing is not None:
        try:
            return model.preprocessing({"image": path})["image"]
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CLIError(f"the bundle's preprocessing failed on {path}: {reason}") from exc
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange

    image = original.float()
    if args.intensity_range is not None:
        a_min, a_max = args.intensity_range
        image = ScaleIntensityRange(a_min, a_max, 0.0, 1.0, clip=True)(image)
    if args.zscore:
        image = NormalizeIntensity(channel_wise=True)(image)
    return image


def _label_on_grid(path: str, image: Any) -> torch.Tensor:
    """The label map read from ``path``, resampled (nearest) onto the network input's grid ``(1, 1, *spatial)``."""
    from monai.transforms import ResampleToMatch

    label = read_image(path, "label")
    if label.shape[0] != 1:
        raise CLIError(f"label {path} has {label.shape[0]} channels; give a single-channel label map")
    if tuple(label.shape[1:]) != tuple(image.shape[1:]) or not torch.allclose(label.affine, image.affine, atol=1e-4):
        label = ResampleToMatch(mode="nearest")(label, image)
    return torch.as_tensor(label).round().long()[None]


def _to_original_grid(outputs: dict[str, torch.Tensor], image: Any, model: LoadedModel) -> dict[str, np.ndarray]:
    """Invert the bundle's spatial preprocessing on every ``(N, *spatial)`` output (linear interpolation)."""
    if model.preprocessing is None or not getattr(image, "applied_operations", None):
        return {key: value.detach().cpu().numpy() for key, value in outputs.items()}
    from monai.transforms import Invertd

    invert = Invertd(keys=list(outputs), transform=model.preprocessing, orig_keys="image", nearest_interp=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inverted = invert({"image": image, **{k: v.detach().cpu() for k, v in outputs.items()}})
    return {key: np.asarray(torch.as_tensor(inverted[key]).cpu().numpy()) for key in outputs}


def _stats(cam: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    world = affine @ np.array([*peak, 1.0])
    total = float(cam.sum())
    return {
        "min": float(cam.min()),
        "max": float(cam.max()),
        "mean": float(cam.mean()),
        "peak_voxel": [int(i) for i in peak],
        "peak_world_ras_mm": [round(float(v), 4) for v in world[:3]],
        "predicted_voxels": int(mask.sum()),
        "mass_in_prediction": float(cam[mask].sum() / total) if total > 0 else None,
    }


def _save_png(fig: Any, path: str) -> None:
    from monai_segcam.visualize import save_figure

    save_figure(fig, path, dpi=100)
    fig.clear()


def _explain_case(
    path: str,
    label_path: str | None,
    name: str,
    model: LoadedModel,
    predictor: Any,
    engines: dict[str, Any],
    args: Namespace,
    staging: str,
) -> dict[str, Any]:
    """Compute and write one case's files into ``staging``; returns its JSON summary."""
    start = time.perf_counter()
    original = read_image(path)
    image = _preprocess(path, original, model, args)
    if model.in_channels is not None and image.shape[0] != model.in_channels:
        raise CLIError(
            f"{path} gives {image.shape[0]} channel(s) but the network expects {model.in_channels} (in_channels)"
        )
    label = None if label_path is None else _label_on_grid(label_path, image)
    x = torch.as_tensor(image).float()[None]
    logits = predictor.predict(x).cpu()
    num_classes = logits.shape[1]
    default_classes = list(range(num_classes)) if model.multi_label else (list(range(1, num_classes)) or [0])
    classes = args.classes if args.classes is not None else default_classes
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise CLIError(f"--classes {bad} out of range: the network has {num_classes} output channels")
    region, region_summary = _region(parse_region(args.region), original, image)
    maps: dict[tuple[str, str], torch.Tensor] = {}
    for method, engine in engines.items():
        try:
            result = engine(x, classes=classes, region=region, pred=logits, label=label)
        except ValueError as exc:
            raise CLIError(f"{path}: {exc}") from exc
        for layer, cam in result.items():
            maps[(layer, method)] = torch.as_tensor(cam)[0]
    keys = {f"cam{i}": key for i, key in enumerate(maps)}
    grid = _to_original_grid({"pred": logits[0], **{k: maps[v] for k, v in keys.items()}}, image, model)
    shape, affine = tuple(original.shape[1:]), original.affine.numpy().astype(np.float64)
    if tuple(grid["pred"].shape[1:]) != shape:
        raise CLIError(f"{path}: outputs came back on a {tuple(grid['pred'].shape[1:])} grid, not the input's {shape}")
    seg_path = os.path.join(staging, f"{name}_seg.nii.gz")
    if model.multi_label:  # one channel per class, stored last like MONAI's writers: (X, Y, Z, C)
        positive = grid["pred"] > 0
        write_nifti(np.moveaxis(positive, 0, -1).astype(np.uint8), affine, seg_path)

        def predicted(c: int) -> np.ndarray:
            return positive[c]
    else:
        seg = grid["pred"].argmax(0)
        write_nifti(seg.astype(np.uint8 if num_classes <= 255 else np.int16), affine, seg_path)

        def predicted(c: int) -> np.ndarray:
            return seg == c

    written = [{"file": f"{name}_seg.nii.gz", "kind": "segmentation"}]
    layer_modules = {layer.key: layer.module_name for layer in predictor.layers}
    for i, c in enumerate(classes):
        mask = predicted(c)
        panel: dict[str, dict[str, np.ndarray]] = {}
        for tag, (layer, method) in keys.items():
            cam = grid[tag][i].astype(np.float32)
            stats = _stats(cam, affine, mask)
            if args.normalize:
                from monai_segcam.cam import normalize_cam

                cam = normalize_cam(torch.from_numpy(cam)[None, None])[0, 0].numpy()
            stem = f"{name}_cam_{method}_{sanitize(layer, 'layer')}_class{c}"
            entry = {"class": c, "class_name": model.class_names.get(c), "layer": layer, "module": layer_modules[layer]}
            entry.update(method=method, stats=stats, normalized=args.normalize)
            write_nifti(cam, affine, os.path.join(staging, f"{stem}.nii.gz"))
            written.append({"file": f"{stem}.nii.gz", "kind": "cam", **entry})
            if args.png:
                from monai_segcam.visualize import plot_orthogonal_slices

                class_name = f" ({entry['class_name']})" if entry["class_name"] else ""
                title = f"{name} | class {c}{class_name} | {layer} | {method}"
                fig = plot_orthogonal_slices(original[0], cam, region=mask, center=args.center, title=title)
                _save_png(fig, os.path.join(staging, f"{stem}.png"))
                written.append({"file": f"{stem}.png", "kind": "png", "class": c, "layer": layer, "method": method})
            panel.setdefault(layer, {})[method] = cam
        if args.png and len(keys) > 1:
            from monai_segcam.visualize import plot_cam_panel

            fig = plot_cam_panel(original[0], panel, region=mask if mask.any() else None, title=f"{name} | class {c}")
            _save_png(fig, os.path.join(staging, f"{name}_cam_class{c}_panel.png"))
            written.append(
                {"file": f"{name}_cam_class{c}_panel.png", "kind": "png", "class": c, "layer": None, "method": None}
            )
    summary = {
        "case": name,
        "input": {
            "path": os.path.abspath(path),
            "shape": list(shape),
            "channels": int(original.shape[0]),
            "affine": affine.tolist(),
            "label": None if label_path is None else os.path.abspath(label_path),
        },
        "network_input_shape": list(image.shape),
        "network_input_affine": np.asarray(image.affine, dtype=np.float64).tolist(),
        "region_on_network_grid": region_summary,
        "classes": {str(c): model.class_names.get(c) for c in classes},
        "predicted_voxels": {str(c): int(predicted(c).sum()) for c in range(num_classes)},
        "files": written,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return summary


def _settings(args: Namespace, engine: Any, device: torch.device) -> dict[str, Any]:
    return {
        "layers": {layer.key: layer.module_name for layer in engine.layers},
        "methods": list(args.method),
        "region": args.region,
        "target": args.target,
        "roi_size": [int(r) for r in np.atleast_1d(engine.roi_size)],
        "overlap": engine.overlap,
        "sw_batch_size": engine.sw_batch_size,
        "mode": str(engine.mode),
        "device": str(device),
        "normalize": args.normalize,
        "png": args.png,
    }


def run_explain(args: Namespace) -> int:
    """Run ``monai-segcam explain``; returns the exit status (1 when a case failed)."""
    from monai.utils import optional_import

    tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
    labels: Sequence[str | None] = args.label if args.label is not None else [None] * len(args.images)
    if args.label is None and parse_region(args.region)[0] in _LABEL_REGIONS:
        raise CLIError(f"--region {args.region} needs the ground truth: give --label FILE")
    if len(labels) != len(args.images):
        raise CLIError(f"--label got {len(labels)} file(s) for {len(args.images)} image(s): give one label per image")
    check_exists(args.images, "image")
    check_exists([p for p in labels if p is not None], "label")
    device = resolve_device(args.device)
    model = load_model(args, checkpoint_required=True)
    model.network.to(device)
    predictor, engines = _engines(model, args, device)
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise CLIError(f"--output {args.output} exists and is not a folder")
    os.makedirs(output, exist_ok=True)
    settings = _settings(args, predictor, device)
    cases = list(zip(args.images, labels, case_names(args.images)))
    if has_tqdm and not args.quiet and len(cases) > 1:
        cases = tqdm(cases, desc="cases", unit="case")
    failed = 0
    for path, label_path, name in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with staged_directory(output, name) as staging:
                    summary = _explain_case(path, label_path, name, model, predictor, engines, args, staging)
                    summary.update(model=model.description, settings=settings)
                    write_json(summary, os.path.join(staging, f"{name}_segcam.json"))
            except Exception as exc:  # one failed case leaves nothing behind and does not stop the others
                if len(args.images) == 1 or args.debug or not isinstance(exc, (CLIError, RuntimeError, ValueError)):
                    raise
                failed += 1
                reason = str(exc) if isinstance(exc, CLIError) else f"{path}: {type(exc).__name__}: {exc}"
                _print(f"monai-segcam: error: {reason.strip().splitlines()[0]}", error=True)
                continue
        if not args.quiet:
            for message in dict.fromkeys(str(w.message) for w in caught if args.debug or "monai_segcam" in w.filename):
                _print(f"warning: {name}: {message}", error=True)
            _print(f"{name}: {len(summary['files']) + 1} files in {os.path.join(output, name)}")
    if getattr(args, "report", False):
        from monai_segcam.report.explain_output import report_from_explain_output

        reported = [n for n in case_names(args.images) if os.path.isfile(os.path.join(output, n, f"{n}_segcam.json"))]
        index = report_from_explain_output(output, reported)
        if not args.quiet:
            _print(f"review report: {index}")
    if failed:
        _print(f"monai-segcam: error: {failed} of {len(args.images)} case(s) failed", error=True)
    return 1 if failed else 0


def _print(message: str, error: bool = False) -> None:
    """Print without breaking tqdm progress bars."""
    import sys

    from monai.utils import optional_import

    tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
    stream = sys.stderr if error else sys.stdout
    if has_tqdm:
        tqdm.write(message, file=stream)
    else:
        print(message, file=stream)
