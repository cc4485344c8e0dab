# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Size of a review report (``monai_segcam.report``) of synthetic cases with real CAMs.

Each case is a demo phantom (``make_phantom(shape, seed)``, CT-like with noise) explained by the demo bundle's
trained UNet like ``inference.json`` does (sliding windows 64x64x48, Seg-HiRes-Grad-CAM at ``bottleneck`` and
``pre_head``, classes 1 and 2: four maps per case), with its prediction and label. Prints the report's size, the
size per case and volume kind, and the size of the folder zipped.

Run: ``python benchmarks/bench_report_size.py --cases 100`` (demo-sized 80x80x56 volumes, about 10 minutes on 2 CPU
cores); ``--shape 192 192 128 --cases 10`` for CT-sized volumes (report grid 96x96x64).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks.nets import UNet
from monai.transforms import Orientation, ScaleIntensityRange

from monai_segcam import SlidingWindowSegCAM
from monai_segcam.data import make_phantom
from monai_segcam.data.phantoms import phantom_affine
from monai_segcam.report import SegCAMReport, cams_from_layers, report_size
from monai_segcam.report.pages import format_size

BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bundles", "segcam_demo")


def network() -> UNet:
    net = UNet(3, 1, 3, (8, 16, 32, 64), (2, 2, 2), num_res_units=1, norm="batch").eval()
    net.load_state_dict(torch.load(os.path.join(BUNDLE, "models", "model.pt"), weights_only=True))
    return net


def case(shape, seed: int) -> tuple[MetaTensor, MetaTensor]:
    """A phantom and its label on the RAS-oriented grid, intensities scaled like the bundle's preprocessing."""
    image, label = make_phantom(shape, seed=seed)
    affine = torch.as_tensor(phantom_affine(shape))
    image = Orientation("RAS", labels=None)(MetaTensor(torch.from_numpy(image)[None], affine=affine))
    label = Orientation("RAS", labels=None)(MetaTensor(torch.from_numpy(label.astype(np.float32))[None], affine=affine))
    return ScaleIntensityRange(-200, 300, 0.0, 1.0, clip=True)(image), label


def kind_sizes(folder: str) -> dict[str, float]:
    """Mean stored bytes per case and volume kind (base64 text inside ``cases/*.js``; ``cams``: all maps)."""
    sizes: dict[str, int] = defaultdict(int)
    files = [name for name in os.listdir(os.path.join(folder, "cases")) if name.endswith(".js")]
    for name in files:
        with open(os.path.join(folder, "cases", name), encoding="utf-8") as stream:
            text = stream.read()
        data = json.loads(text[text.index("{") : text.rindex("}") + 1])
        for key, volume in data["volumes"].items():
            sizes["cams" if key.startswith("cam") else key] += len(volume["nifti_gz_base64"])
    return {key: total / len(files) for key, total in sizes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 80, 56))
    parser.add_argument("--max-size", type=int, default=96)
    parser.add_argument("--output", help="report folder (default: a temporary folder, removed)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    net = network()
    engine = SlidingWindowSegCAM(net, roi_size=(64, 64, 48), overlap=0.25, mode="gaussian", sw_batch_size=4,
                                 layers=["bottleneck", "pre_head"], method="hirescam")  # fmt: skip
    folder = args.output or tempfile.mkdtemp(prefix="segcam_report_")
    report = SegCAMReport(folder, max_size=args.max_size, class_names={1: "large organ", 2: "small organ"})
    start = time.perf_counter()
    for i in range(args.cases):
        image, label = case(args.shape, seed=5000 + i)
        logits = engine.predict(image[None].float())
        maps = engine(image[None].float(), classes=[1, 2], region="pred", pred=logits)
        seg = MetaTensor(logits[0].argmax(0, keepdim=True).float(), affine=image.affine)
        report.add_case(f"phantom{i:03d}", image, seg, cams_from_layers(maps, "hirescam", [1, 2]), label=label)
    report.write()
    seconds = time.perf_counter() - start
    size = report_size(folder)
    archive = shutil.make_archive(os.path.join(tempfile.gettempdir(), "segcam_report_zip"), "zip", folder)
    zipped = os.path.getsize(archive)
    os.remove(archive)
    grid = next(iter(report.cases.values()))["shape"]
    cam_grid = report.cam_max_size
    print(f"{args.cases} cases of {tuple(args.shape)} voxels, report grid {tuple(grid)} (CAMs: at most {cam_grid} "
          "per side), 4 maps per case")  # fmt: skip
    print(f"report: {format_size(size)} ({size} bytes), zipped {format_size(zipped)}, "
          f"per case {format_size(size // args.cases)}")  # fmt: skip
    print("per case (base64 text): " + ", ".join(f"{k} {format_size(int(v))}" for k, v in kind_sizes(folder).items()))
    print(f"writing (CAMs included): {seconds:.1f} s")
    if args.output is None:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
