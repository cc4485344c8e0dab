# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Forward + input-gradient of CPU 3D convolutions: the default (NCDHW) layout vs channels-last input.

Why the CAM engines differentiate CPU convolutions on channels-last input (``monai_segcam/cam/capture.py``): prints,
per convolution and volume size, the time of ``conv(x)`` plus ``autograd.grad`` with respect to ``x`` (parameters
frozen, as in a CAM) for both layouts, best of three alternating runs, CPU time of the process; then the same for the
head of the benchmark U-Net (``UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2).model[2]``: a
transposed convolution to 3 channels and a 3-channel residual unit at full resolution) from its 96³ ``pre_head``
activation, plain and with the engine's layout hooks (``ActivationCapture``).

Run: ``python benchmarks/bench_conv_layout.py`` (one thread; ``BENCH_THREADS=2`` for two).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from monai.networks.nets import UNet

from monai_segcam.cam.capture import ActivationCapture

LAYOUTS = {"default": torch.contiguous_format, "channels-last": torch.channels_last_3d}


def best_times(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """The best CPU time of forward + input gradient per layout, the layouts alternating."""
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for _ in range(repeats):
        for name, layout in LAYOUTS.items():
            leaf = x.contiguous(memory_format=layout).requires_grad_(True)
            start = time.process_time()
            y = module(leaf)
            torch.autograd.grad(y, leaf, torch.ones_like(y))
            times[name].append(time.process_time() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), cpu; time of forward + input gradient (ms)")
    print("| convolution | volume | default | channels-last | ratio |\n|---|---|---|---|---|")
    for size in (64, 80, 96, 128):
        for cin, cout in ((3, 3), (16, 16), (3, 16)):
            conv = torch.nn.Conv3d(cin, cout, 3, padding=1).requires_grad_(False)
            t = best_times(conv, torch.randn(1, cin, size, size, size))
            ratio = t["channels-last"] / t["default"]
            print(f"| Conv3d {cin}→{cout}, 3³ | {size}³ | {t['default'] * 1e3:.0f} | {t['channels-last'] * 1e3:.0f} | {ratio:.2f} |")
    net = UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2).eval().requires_grad_(False)
    kept = {}
    handle = net.model[1].register_forward_hook(lambda _m, _i, out: kept.update(a=out))
    with torch.no_grad():
        net(torch.randn(1, 1, 96, 96, 96))
    handle.remove()
    head, leaf = net.model[2], kept["a"].requires_grad_(True)
    times: dict[str, list[float]] = {"default": [], "engine": []}
    for _ in range(3):
        for name in times:
            with ActivationCapture(net, []) if name == "engine" else nullcontext():  # the engine's layout hooks
                start = time.process_time()
                y = head(leaf)
                torch.autograd.grad(y, leaf, torch.ones_like(y))
                times[name].append(time.process_time() - start)
    default, engine = min(times["default"]), min(times["engine"])
    print(f"| U-Net head (pre_head → logits), as the engine runs it | 96³ | {default * 1e3:.0f} | {engine * 1e3:.0f} | "
          f"{engine / default:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
