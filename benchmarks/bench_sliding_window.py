# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SlidingWindowSegCAM vs plain MONAI sliding-window inference.

Model: ``UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)`` (untrained, seeded); a 192³ volume,
roi 96³, overlap 0.25, constant blending, sw_batch_size 1; region = voxels predicted as the class. Prints, measured in
one run: plain ``sliding_window_inference``; the engine's prediction alone (its convolutions run in channels-last layout
on CPU, see ``docs/performance.md``); the *floor* of a ``pre_head`` CAM (every window's forward pass plus the
backward pass of the head alone, nothing else); the CAM with the prediction given and computed (prediction and CAM
from one forward pass: each window's backward runs as soon as the prediction over it is final; and, for comparison,
a region that is not voxel-wise, the largest connected component, for which the windows are kept, within the default
1 GiB ``activation_budget``, until the whole prediction is known); mixed precision (bfloat16 autocast on CPU) for plain inference and the CAM; one layer vs
every encoder + decoder stage in one pass; one class vs three. Times are medians of round-robin samples; peak RSS
comes from one fresh process per configuration.

``--scorecam`` adds Score-CAM at the bottleneck (256 channels: one masked prediction per channel) for a 60³ box in
the corner, which only the first window touches.

Run: ``python benchmarks/bench_sliding_window.py`` (``--size 128 --repeats 1`` for a quick run).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam.cam import WindowGrid
from monai_segcam.cam.capture import ActivationCapture
from monai_segcam.cam.layers import resolve_layers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_times, peak_rss_in_subprocess, report_child_peak, reset_peak_rss

from monai_segcam import Box, SlidingWindowSegCAM, layer_presets

ROI, OVERLAP = (96, 96, 96), 0.25


def build(size: int):
    torch.manual_seed(0)
    net = UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2).eval()
    x = torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(1))
    return net, x


def configurations(net, x, scorecam: bool = False):
    presets = layer_presets(net)
    stages = [presets[k] for k in sorted(presets) if k.startswith(("encoder.", "decoder."))]
    earliest = presets["encoder.0"]

    def plain():
        with torch.no_grad():
            return sliding_window_inference(x, ROI, 1, net, OVERLAP)

    def plain_amp():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return sliding_window_inference(x, ROI, 1, net, OVERLAP)

    pred = plain()

    def floor():
        """Every window's forward pass with the graph recorded from the pre_head output on, and the backward of the
        part after it: the unavoidable work of a pre_head CAM, nothing else (no region, no stitching, the same
        convolution layout as the engine)."""
        with torch.enable_grad(), ActivationCapture(net, resolve_layers(net, "pre_head")) as capture:
            for window in WindowGrid.from_monai(x.shape[2:], ROI, OVERLAP).slices:
                capture.reset()
                y = net(x[(..., *window)])
                torch.autograd.grad(y, capture.activations["pre_head"], torch.ones_like(y))

    def predict_only():
        return SlidingWindowSegCAM(net, ROI, overlap=OVERLAP).predict(x)

    def cam(layers, classes, given, amp=False, region="pred"):
        sw = SlidingWindowSegCAM(net, ROI, layers=layers, method="hirescam", overlap=OVERLAP, amp=amp)
        return lambda: sw(x, classes=classes, pred=pred if given else None, region=region)

    def score_cam():
        sw = SlidingWindowSegCAM(net, ROI, layers="bottleneck", method="scorecam", overlap=OVERLAP)
        return sw(x, classes=1, region=Box((0, 0, 0), (60, 60, 60)))

    extra = {"Score-CAM bottleneck, 1 class, 60³ box (1 window)": score_cam} if scorecam else {}
    return {
        "plain sliding_window_inference": plain,
        "SlidingWindowSegCAM.predict (prediction only)": predict_only,
        "floor of a pre_head CAM (window forwards + head backward)": floor,
        "CAM pre_head, 1 class, pred given": cam("pre_head", 1, True),
        "CAM pre_head, 1 class, pred computed (one pass)": cam("pre_head", 1, False),
        "CAM pre_head, 1 class, pred computed, region: largest component (windows kept until it is known)": cam(
            "pre_head", 1, False, region="component"),
        "plain sliding_window_inference, amp (bfloat16)": plain_amp,
        "CAM pre_head, 1 class, pred computed, amp (bfloat16)": cam("pre_head", 1, False, amp=True),
        "CAM pre_head, 3 classes, pred given": cam("pre_head", [0, 1, 2], True),
        "CAM earliest layer (encoder.0), 1 class, pred given": cam(earliest, 1, True),
        f"CAM all {len(stages)} encoder+decoder stages, 1 class, pred given": cam(stages, 1, True),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--scorecam", action="store_true", help="add Score-CAM at the bottleneck (slow)")
    parser.add_argument("--memory-child", nargs=3, metavar=("SIZE", "NAME", "SCORECAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if args.memory_child:
        reset_peak_rss()
        net, x = build(int(args.memory_child[0]))
        configurations(net, x, args.memory_child[2] == "1")[args.memory_child[1]]()
        report_child_peak()
        return
    net, x = build(args.size)
    configs = configurations(net, x, args.scorecam)
    times = median_times(configs, repeats=args.repeats, warmup=0)
    plain = times["plain sliding_window_inference"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; {args.size}³, roi {ROI}, overlap {OVERLAP}")
    print("| configuration | time (s) | × plain SW | peak RSS (MiB) |\n|---|---|---|---|")
    for name, t in times.items():
        rss = "" if args.no_memory else f"{peak_rss_in_subprocess(__file__, str(args.size), name, str(int(args.scorecam))):.0f}"
        print(f"| {name} | {t:.2f} | {t / plain:.2f} | {rss} |")
    one = times["CAM pre_head, 1 class, pred given"]
    stages = next(v for k, v in times.items() if k.startswith("CAM all"))
    computed = times["CAM pre_head, 1 class, pred computed (one pass)"]
    component = next(v for k, v in times.items() if "largest component" in k)
    print(f"\nCAM (pred computed, one pass) / plain SW: {computed / plain:.2f} (goal <= 1.5); region not voxel-wise "
          f"(the largest component): {component / plain:.2f}")
    print(f"CAM (pred given) / floor: {one / times['floor of a pre_head CAM (window forwards + head backward)']:.2f} (goal <= 1.15)")
    print(f"CAM (pred given) / plain SW: {one / plain:.2f} (goal <= 2.0)")
    amp = times["CAM pre_head, 1 class, pred computed, amp (bfloat16)"]
    print(f"CAM amp / plain SW amp: {amp / times['plain sliding_window_inference, amp (bfloat16)']:.2f}")
    print(f"all stages / earliest layer alone: {stages / times['CAM earliest layer (encoder.0), 1 class, pred given']:.2f} (goal <= 1.3)")
    print(f"3 classes / 1 class: {times['CAM pre_head, 3 classes, pred given'] / one:.2f} (goal <= 2.2)")


if __name__ == "__main__":
    main()
