# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Every class at once: a SegResNet shaped like the model-zoo ``wholeBody_ct_segmentation`` bundle's (105 classes,
``init_filters=32``, ``blocks_down=(1, 2, 2, 4)``, ``blocks_up=(1, 1, 1)``; untrained, seeded) on a 128³ volume in 64³
windows, overlap 0.25, gaussian blending, sw_batch_size 1.

Rows, measured in one run (the ratios are what to compare; the machine may be shared): plain
``sliding_window_inference``; HiResCAM at ``pre_head`` of all 105 classes with ``region="all"`` (every class over the
whole volume, so no class is skipped as empty; no prediction needed) and with ``region="pred"`` and the prediction
computed (one pass); the same two with one backward per class (``batch_classes = False``, the path before batching) when
``--per-class`` is given; and ``bottleneck``, all 105 classes (``region="all"``) on one 64³ window beside plain inference
of that window, since every class there needs its own backward through the decoder.

Run: ``python benchmarks/bench_all_classes.py`` (``--size 64`` for a quick run).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet

from monai_segcam import SegCAM, SlidingWindowSegCAM

OVERLAP, MODE, CLASSES = 0.25, "gaussian", 105


def build(size: int):
    torch.manual_seed(0)
    net = SegResNet(spatial_dims=3, in_channels=1, out_channels=CLASSES, init_filters=32, blocks_down=(1, 2, 2, 4),
                    blocks_up=(1, 1, 1)).eval()  # fmt: skip
    x = torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(1))
    return net, x


def timed(name: str, fn, times: dict[str, float]) -> None:
    start = time.perf_counter()
    fn()
    times[name] = time.perf_counter() - start
    print(f"  {name}: {times[name]:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--classes", type=int, default=CLASSES, help="explain the first N classes (default all 105)")
    parser.add_argument("--per-class", action="store_true", help="also time one backward per class (slow)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    net, x = build(args.size)
    classes, roi = list(range(args.classes)), (args.roi,) * 3
    times: dict[str, float] = {}

    def plain():
        with torch.no_grad():
            return sliding_window_inference(x, roi, 1, net, OVERLAP, mode=MODE)

    def cam(region: str, batched: bool = True):
        sw = SlidingWindowSegCAM(net, roi, layers="pre_head", method="hirescam", overlap=OVERLAP, mode=MODE)
        sw.batch_classes = batched
        return lambda: sw(x, classes=classes, region=region)

    window = x[..., : roi[0], : roi[1], : roi[2]]

    def plain_window():
        with torch.no_grad():
            return net(window)

    bottleneck = SegCAM(net, layers="bottleneck", method="hirescam")
    plain()  # warm-up
    timed("plain sliding_window_inference", plain, times)
    n = len(classes)
    timed(f"CAM pre_head, {n} classes, region all", cam("all"), times)
    timed(f"CAM pre_head, {n} classes, region pred, pred computed (one pass)", cam("pred"), times)
    if args.per_class:
        timed(f"CAM pre_head, {n} classes, region all, one backward per class", cam("all", False), times)
    timed(f"plain inference, one {args.roi}³ window", plain_window, times)
    timed(f"CAM bottleneck, {n} classes, region all, one {args.roi}³ window",
          lambda: bottleneck(window, classes=classes, region="all"), times)  # fmt: skip
    plain_t, window_t = times["plain sliding_window_inference"], times[f"plain inference, one {args.roi}³ window"]
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, cpu; {args.size}³, roi {roi}, "
          f"overlap {OVERLAP}, {MODE}")  # fmt: skip
    print("| configuration | time (s) | × plain |\n|---|---|---|")
    for name, t in times.items():
        base = window_t if name.endswith(f"one {args.roi}³ window") else plain_t
        print(f"| {name} | {t:.1f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
