# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Where the time of a sliding-window CAM goes: the engine's labelled phases under ``torch.profiler``.

The engine marks its phases with ``torch.profiler.record_function``: ``segcam::forward`` (the windows through the
network), ``segcam::backward`` (the vector-Jacobian products from the logits to the explained layers),
``segcam::cotangent`` (the region cotangent of each window), ``segcam::maps`` (the rule's per-window maps, upsampled
and added), ``segcam::stitch`` (the stitched prediction), ``segcam::region`` (the region weights). The rest of the
wall time is Python bookkeeping and the accumulation buffers. The same labels show in a GPU trace
(``torch.profiler`` with ``ProfilerActivity.CUDA``).

Model, volume and windows as ``bench_sliding_window.py``; a ``pre_head`` HiResCAM of class 1 over the voxels
predicted as that class, the prediction computed (one pass). The profile also breaks the plain forward and the
backward down by operator (the three costliest of each), and prints what one window's kept pass costs (its autograd
graph and its activations, as the engine counts them against ``activation_budget``) and how many windows were kept at
once.

Run: ``python benchmarks/profile_sliding_window.py`` (``--size 128`` for a quick run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sliding_window import OVERLAP, ROI, build

from monai_segcam import SlidingWindowSegCAM
from monai_segcam.cam import sliding_window

PHASES = ("forward", "backward", "cotangent", "maps", "stitch", "region")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--layer", default="pre_head")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 autocast on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    net, x = build(args.size)
    cam = SlidingWindowSegCAM(net, ROI, layers=args.layer, method="hirescam", overlap=OVERLAP, amp=args.amp)
    cam(x[..., :96, :96, :96], classes=1)  # warm-up
    kept = []
    keep = sliding_window._WindowPass.keep

    def counting_keep(self, group, logits, run, graph_bytes):  # what the engine charges to the budget per window
        acts = sum(a.numel() * a.element_size() for terms in run.activations.values() for a in terms)
        keep(self, group, logits, run, graph_bytes)
        kept.append((graph_bytes, acts, len(self.cache), self.cam.activation_budget - self.budget_left))

    sliding_window._WindowPass.keep = counting_keep
    try:
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            cam(x, classes=1)
        wall = time.perf_counter() - start
    finally:
        sliding_window._WindowPass.keep = keep
    events = {e.key: e for e in prof.key_averages()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.size}³, roi {ROI}, overlap {OVERLAP}; "
          f"{args.layer} HiResCAM{', amp' if args.amp else ''}, prediction computed; wall {wall:.2f} s under the profiler")  # fmt: skip
    print("| phase | calls | time (s) | share of wall |\n|---|---|---|---|")
    labelled = 0.0
    for phase in PHASES:
        event = events.get(f"segcam::{phase}")
        seconds = event.cpu_time_total / 1e6 if event is not None else 0.0
        labelled += seconds
        print(f"| {phase} | {event.count if event else 0} | {seconds:.2f} | {seconds / wall:.0%} |")
    print(f"| other (Python, buffers) | | {wall - labelled:.2f} | {(wall - labelled) / wall:.0%} |")
    ops = [e for e in prof.key_averages() if not e.key.startswith("segcam::")]
    backward = sorted((e for e in ops if "Backward" in e.key and "evaluate_function" not in e.key),
                      key=lambda e: -e.cpu_time_total)[:3]  # fmt: skip
    forward = sorted((e for e in ops if e.key.startswith("aten::") and "backward" not in e.key),
                     key=lambda e: -e.self_cpu_time_total)[:3]  # fmt: skip
    print("\ncostliest backward nodes: " + ", ".join(f"{e.key} {e.cpu_time_total / 1e6:.2f} s" for e in backward))
    print("costliest operators (self time): " + ", ".join(f"{e.key} {e.self_cpu_time_total / 1e6:.2f} s" for e in forward))
    graph, acts = kept[0][:2]
    windows, in_use = max(k[2] for k in kept), max(k[3] for k in kept)
    print(f"one window's kept pass: graph {graph / 2**20:.1f} MiB + activations {acts / 2**20:.1f} MiB; at most "
          f"{windows} of {len(kept)} windows kept at once ({in_use / 2**20:.0f} MiB of the "
          f"{cam.activation_budget / 2**30:g} GiB activation_budget)")


if __name__ == "__main__":
    main()
