# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegOcclusion vs brute force vs MONAI's OcclusionSensitivity, on one region score of a sliding-window prediction.

Model: ``UNet(3, 1, 3, CHANNELS, strides 2, num_res_units=RES)`` (untrained, seeded); a SIZE³ volume, windows ROI³
(overlap 0.25, constant blending, ``sw_batch_size`` = ``--batch-size``), occluders MASK³ every STRIDE voxels set to
0, region = every voxel of class 1 (``--region all``, no window can be skipped) or the voxels predicted as class 1
(``--region pred``). The explained score is ``S = sum_region logit_1`` of the stitched prediction. Three ways to
get the same occlusion map ``mean over covering occluders of S(x) - S(x_p)``:

- ``ours``: :py:class:`monai_segcam.perturbation.SegOcclusion` (clean windows kept; an occluded image re-runs only
  the windows that see the occluder and touch the region, ``--batch-size`` windows per forward pass);
- ``brute``: MONAI's ``sliding_window_inference`` on every occluded image;
- ``monai``: ``monai.visualize.OcclusionSensitivity`` with ``nn_module`` wrapped to return the region score of
  the stitched prediction (its docs allow any ``[B, C]`` output; ``mode=0.0``, ``overlap=1 - STRIDE/MASK``,
  ``activate=False``); its map is the mean occluded score, so the drop map is ``S(x) - map``. It needs
  ``STRIDE <= MASK``.

Printed per way: wall time (median of ``--repeats`` round-robin runs), window forward passes (counted by a hook on the network: one per window, whatever the
batch), and the largest difference of its map from ours relative to the map's largest value. Nothing is
extrapolated: every figure is measured by the run.

Run: ``python benchmarks/bench_occlusion.py`` (128³, windows 64³, occluders 16³ every 16; about 8 minutes on one
thread of a busy 2-core machine, nearly all of it brute force and MONAI); ``--size 96`` for a run under a minute;
``--methods ours`` to time SegOcclusion alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from monai.visualize import OcclusionSensitivity

from monai_segcam.cam.regions import region_weights
from monai_segcam.perturbation import SegOcclusion, occluder_boxes

METHODS = ("ours", "brute", "monai")
CLASS = 1


class WindowCounter:
    """Counts the windows (batch items) that go through ``net``'s forward."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.count = 0
        net.register_forward_pre_hook(self.hook)

    def hook(self, _module, inputs) -> None:
        self.count += inputs[0].shape[0]


def build(args):
    torch.manual_seed(0)
    strides = (2,) * (len(args.channels) - 1)
    net = UNet(3, 1, 3, tuple(args.channels), strides, num_res_units=args.res_units).eval()
    x = torch.randn(1, 1, *(args.size,) * 3, generator=torch.Generator().manual_seed(1))
    return net, x


def run_ours(net, x, weights, args) -> torch.Tensor:
    occlusion = SegOcclusion(
        net, roi_size=(args.roi,) * 3, mask_size=args.mask, stride=args.stride, baseline=0.0, relu=False,
        batch_size=args.batch_size, sw_batch_size=args.batch_size, overlap=args.overlap,
    )  # fmt: skip
    return occlusion(x, classes=CLASS, region=weights).map.as_tensor()


def _infer(net, image, args):
    with torch.no_grad():
        return sliding_window_inference(image, (args.roi,) * 3, args.batch_size, net, args.overlap)


def run_brute(net, x, weights, args) -> torch.Tensor:
    def score(image):
        return float((weights * _infer(net, image, args)[:, CLASS : CLASS + 1]).sum())

    clean = score(x)
    maps, count = torch.zeros_like(x), torch.zeros_like(x)
    for box in occluder_boxes(x.shape[2:], args.mask, args.stride):
        index = (slice(None), slice(None), *box)
        occluded = x.clone()
        occluded[index] = 0.0
        maps[index] += clean - score(occluded)
        count[index] += 1
    return maps / count.clamp_min(1)  # voxels no occluder covers (stride > mask) stay 0


class RegionScore(torch.nn.Module):
    """``[B, 1]`` region scores of the stitched predictions of a batch of images: what ``OcclusionSensitivity``
    calls its classifier."""

    def __init__(self, net, weights, args) -> None:
        super().__init__()
        self.net, self.weights, self.args = net, weights, args

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = [(self.weights * _infer(self.net, image[None], self.args)[:, CLASS]).sum() for image in images]
        return torch.stack(scores)[:, None]


def run_monai(net, x, weights, args) -> torch.Tensor:
    if args.stride > args.mask:
        raise ValueError("OcclusionSensitivity needs stride <= mask (overlap >= 0).")
    overlap = 1.0 - args.stride / args.mask
    sensitivity = OcclusionSensitivity(
        RegionScore(net, weights, args), args.mask, n_batch=args.batch_size, verbose=False, mode=0.0,
        overlap=overlap, activate=False,
    )  # fmt: skip
    with torch.no_grad():
        occluded_scores, _ = sensitivity(x)
        clean = float(RegionScore(net, weights, args)(x))
    return clean - occluded_scores[:, :1]  # (B, n_outputs, *spatial): the map of the one score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="volume side (voxels)")
    parser.add_argument("--roi", type=int, default=64, help="window side")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--mask", type=int, default=16, help="occluder side")
    parser.add_argument("--stride", type=int, default=16, help="occluder step")
    parser.add_argument("--batch-size", type=int, default=8, help="windows (or images for monai) per forward pass")
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16], help="UNet channels")
    parser.add_argument("--res-units", type=int, default=0, help="UNet num_res_units")
    parser.add_argument("--region", choices=("all", "pred"), default="all")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=1, help="round-robin repetitions; medians are printed")
    args = parser.parse_args()
    # one thread by default: on 2 shared busy cores, 2 OpenMP threads ran this benchmark about 10x slower (measured)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    net, x = build(args)
    counter = WindowCounter(net)
    pred = _infer(net, x, args) if args.region == "pred" else None
    weights = region_weights(args.region, pred, [CLASS], x.shape[2:], 1, warn_empty=False)
    boxes = occluder_boxes(x.shape[2:], args.mask, args.stride)
    print(
        f"UNet channels {args.channels} res_units {args.res_units}, volume {args.size}³, windows {args.roi}³ "
        f"(overlap {args.overlap}), occluders {args.mask}³ every {args.stride} ({len(boxes)}), region {args.region} "
        f"({int(weights.sum())} voxels), batch {args.batch_size}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    _infer(net, x, args)  # warm-up: the first passes of a shape set up the kernels
    times: dict[str, list[float]] = {method: [] for method in args.methods}
    results = {}
    for _ in range(args.repeats):  # round-robin, so that the machine's load affects every way alike
        for method in args.methods:
            counter.count = 0
            start = time.perf_counter()
            maps = {"ours": run_ours, "brute": run_brute, "monai": run_monai}[method](net, x, weights, args)
            times[method].append(time.perf_counter() - start)
            results[method] = (counter.count, maps)
    seconds = {method: statistics.median(values) for method, values in times.items()}
    reference = "ours" if "ours" in results else args.methods[0]
    print(f"| way | seconds (median of {args.repeats}) | window passes | max diff from {reference} / max | time ratio |")
    print("|---|---|---|---|---|")
    for method, (passes, maps) in results.items():
        scale = float(results[reference][1].abs().max()) or 1.0
        diff = float((maps - results[reference][1]).abs().max()) / scale
        print(f"| {method} | {seconds[method]:.1f} | {passes} | {diff:.1e} | {seconds[method] / seconds[reference]:.2f}x |")


if __name__ == "__main__":
    main()
