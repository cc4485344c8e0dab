# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""NNUNetSegCAM vs nnU-Net's own prediction and vs ``nnunetv2-cam`` (PyPI) on the same nnU-Net v2 model folder.

Model: unless ``--model-folder`` is given, a small nnU-Net v2 model trained for a few iterations per fold with
nnU-Net's own API (``tests/nnunet/build_model_folder.py``: a 32³ patch, a four-stage PlainConvUNet with 8-64
features, two folds), and one two-channel synthetic case of 56 x 64 x 60 voxels (27 tiles). Every tool sees the same
preprocessed case (nnU-Net's ``run_case``), the same folds, mirroring over the checkpoint's axes, tile step 0.5, class
1, the same layer. Prints:

- time (median of round-robin samples) and peak RSS (one fresh process per tool) of nnU-Net's prediction
  (``predict_logits_from_preprocessed_data``), of our CAM (prediction included: the region comes from it) and of
  ``nnunetv2-cam``'s ``compute_cam_with_sliding_window`` (its own per-tile predictions included);
- how far ``nnunetv2-cam``'s map is from the exact one (ours, of the same method and layer; HiResCAM is tested
  against autograd through nnU-Net's prediction): Pearson correlation on the preprocessed grid, and the share of
  each map's mass inside the explained region (the voxels nnU-Net predicts as class 1).

``nnunetv2-cam`` needs ``grad-cam``, which imports ``torchvision`` when it is imported (for methods and image helpers
``nnunetv2-cam`` does not use). PyPI's torchvision is built for CUDA torch and does not import beside a CPU torch
(``operator torchvision::nms does not exist``); with a CPU torch this script stands a stub module in for torchvision
(calling it raises), which changes nothing on ``nnunetv2-cam``'s path. Run it in a virtual environment with
``pip install -c constraints.txt nnunetv2-cam`` (constraints pinning torch) next to ``monai-segcam[nnunet]``.

Run: ``python benchmarks/bench_nnunet.py`` (``--repeats 1 --no-memory`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "nnunet"))
from _common import peak_rss_in_subprocess, report_child_peak, reset_peak_rss  # noqa: E402

PATCH, FEATURES, TRAIN_SHAPE, CASE_SHAPE = 32, (8, 16, 32, 64), (40, 44, 42), (56, 64, 60)
LAYERS = {"pre_head": "decoder.stages.2", "bottleneck": "encoder.stages.3"}


def build_model(root: str) -> str:
    """Train the benchmark's model folder with nnU-Net's API in a fresh process; returns its path."""
    builder = os.path.join(HERE, "..", "tests", "nnunet", "build_model_folder.py")
    command = [sys.executable, builder, root, "--shape", *map(str, TRAIN_SHAPE), "--patch", str(PATCH)]
    command += ["--features", *map(str, FEATURES), "--iterations", "10"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def write_case(folder: str) -> list[str]:
    import SimpleITK as sitk
    from build_model_folder import synthetic_case

    images, _ = synthetic_case(np.random.default_rng(3), CASE_SHAPE, (10.0, 14.0))
    paths = []
    for c, image in enumerate(images):
        itk = sitk.GetImageFromArray(image)
        itk.SetSpacing((1.0, 1.0, 1.5))
        paths.append(os.path.join(folder, f"bench_{c:04d}.nii.gz"))
        sitk.WriteImage(itk, paths[-1])
    return paths


def stub_torchvision() -> None:
    """Stand a stub in for torchvision when the installed one cannot be imported (see the module docstring)."""
    try:
        import torchvision  # noqa: F401

        return
    except Exception:
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]

    def missing(*_args, **_kwargs):
        raise RuntimeError("torchvision is a stub in this benchmark")

    modules = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms")}
    modules["torchvision.transforms.functional"] = types.ModuleType("torchvision.transforms.functional")
    for name in ("Compose", "Normalize", "ToTensor"):
        setattr(modules["torchvision.transforms"], name, missing)
    modules["torchvision.transforms.functional"].resize = missing
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    sys.modules.update(modules)


def tools(folder: str, files: list[str], method: str, layer: str):
    """The timed callables, each returning a map or logits on the preprocessed grid."""
    from monai_segcam.nnunet import NNUNetModel, NNUNetSegCAM

    model = NNUNetModel(folder)
    case = model.preprocess(files)
    cam = NNUNetSegCAM(model, layers=layer, method=method)

    def nnunet_prediction():
        return model.predict(case.data)

    def ours():
        return cam.explain_on_grid(case, model.predict(case.data), classes=[1])[layer][0, 0]

    def theirs():
        stub_torchvision()
        from nnunetv2_cam.cam_core import compute_cam_with_sliding_window

        predictor = model.predictor
        return compute_cam_with_sliding_window(
            predictor.network, case.data, LAYERS[layer], 1, method, model.device, model.configuration_manager,
            model.label_manager, predictor.list_of_parameters, model.tile_step_size, True,
            predictor.allowed_mirroring_axes, cam_type="3d",
        )[0].float()  # fmt: skip

    named = {
        "nnU-Net prediction (predict_logits_from_preprocessed_data)": nnunet_prediction,
        f"monai-segcam NNUNetSegCAM {method} {layer} (prediction included)": ours,
        f"nnunetv2-cam {method} {LAYERS[layer]} (its per-tile predictions included)": theirs,
    }
    return named, model, case


def timed(named, repeats: int):
    """The first output of each tool and its median wall time over ``repeats`` round-robin calls (the first call
    included: each tool loads nothing more on later calls)."""
    outputs, samples = {}, {name: [] for name in named}
    for _ in range(repeats):
        for name, fn in named.items():
            start = time.perf_counter()
            out = fn()
            samples[name].append(time.perf_counter() - start)
            outputs.setdefault(name, out)
    return outputs, {name: statistics.median(values) for name, values in samples.items()}


def agreement(model, case, exact: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    region = model.predict(case.data).argmax(0) == 1
    a, b = exact.flatten().double(), other.flatten().double()
    correlation = float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    def mass(m):
        return float(m[region].sum() / m.sum()) if m.sum() > 0 else float("nan")

    return {
        "correlation": correlation, "mass_exact": mass(exact), "mass_other": mass(other), "voxels": int(region.sum())
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-folder", help="an nnU-Net v2 model folder (default: train the benchmark's model)")
    parser.add_argument("--method", nargs="+", default=["hirescam", "gradcam"])
    parser.add_argument("--layer", default="pre_head", choices=sorted(LAYERS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", nargs=5, metavar=("FOLDER", "CASE0", "CASE1", "METHOD", "NAME"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if args.memory_child:
        folder, file0, file1, method, name = args.memory_child
        named, _, _ = tools(folder, [file0, file1], method, args.layer)
        reset_peak_rss()
        named[name]()
        report_child_peak()
        return
    workdir = tempfile.mkdtemp(prefix="bench_nnunet_")
    folder = args.model_folder or build_model(workdir)
    files = write_case(workdir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; model {os.path.basename(folder)}")
    for method in args.method:
        named, model, case = tools(folder, files, method, args.layer)
        print(f"\n{method}, layer {args.layer} ({LAYERS[args.layer]}), folds {model.folds}, mirror axes "
              f"{model.mirror_axes}, preprocessed case {tuple(case.data.shape)}, "
              f"{len(model.window_grid(case.data.shape[1:]).slices)} tiles of {model.patch_size}")  # fmt: skip
        maps, times = timed(named, args.repeats)
        base = next(iter(times.values()))
        print("| tool | time (s) | × nnU-Net prediction | peak RSS (MiB) |\n|---|---|---|---|")
        for name, seconds in times.items():
            rss = "" if args.no_memory else f"{peak_rss_in_subprocess(__file__, folder, *files, method, name):.0f}"
            print(f"| {name} | {seconds:.2f} | {seconds / base:.2f} | {rss} |")
        exact, other = list(maps.values())[1:]
        print(json.dumps({"method": method, **agreement(model, case, exact, other)}))


if __name__ == "__main__":
    main()
