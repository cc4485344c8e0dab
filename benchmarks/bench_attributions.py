# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The cost of the input attributions against plain sliding-window inference and one autograd backward pass.

Model: ``UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1)`` (untrained, seeded); a SIZE³ volume, windows ROI³
(overlap 0.25, Gaussian blending), region = the voxels predicted as class 1. Timed (median of ``--repeats``
round-robin runs, one process):

- ``inference``: MONAI's ``sliding_window_inference`` under ``torch.no_grad()`` (the prediction alone);
- ``autograd``: ``dS/dx`` by ``.backward()`` through MONAI's ``sliding_window_inference`` (the mask given);
- ``gradient``: ``SlidingWindowSegCAM(method="gradient")``, prediction and gradient in one pass over the windows;
- ``integrated_gradients``: 32 Gauss-Legendre path points (the prediction for the region, then 32 forward and
  backward passes of the windows touching the region);
- ``smoothgrad``: ``--samples`` noisy copies.

Printed per way: wall time, its ratio to ``autograd``, and the windows run forward (counted by a hook). Nothing is
extrapolated. Run: ``python benchmarks/bench_attributions.py`` (64³, windows 32³: 27 windows; a few minutes on one
thread of a shared 2-core machine).
"""

from __future__ import annotations

import argparse

import torch
from _common import median_times
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam import SlidingWindowSegCAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--roi", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()
    windows = [0]
    net.register_forward_pre_hook(lambda _m, inputs: windows.__setitem__(0, windows[0] + inputs[0].shape[0]))
    x = torch.randn(1, 1, args.size, args.size, args.size)
    roi, settings = (args.roi,) * 3, {"overlap": 0.25, "mode": "gaussian"}
    with torch.no_grad():
        mask = (sliding_window_inference(x, roi, 1, net, **settings).argmax(1, keepdim=True) == 1).float()

    def inference():
        with torch.no_grad():
            return sliding_window_inference(x, roi, 1, net, **settings)

    def autograd():
        leaf = x.clone().requires_grad_(True)
        (sliding_window_inference(leaf, roi, 1, net, **settings)[:, 1:2] * mask).sum().backward()
        net.zero_grad(set_to_none=True)
        return leaf.grad

    engines = {
        "gradient": SlidingWindowSegCAM(net, roi, method="gradient", relu=False, **settings),
        "integrated_gradients": SlidingWindowSegCAM(net, roi, method="integrated_gradients", n_steps=args.steps,
                                                    relu=False, **settings),  # fmt: skip
        "smoothgrad": SlidingWindowSegCAM(net, roi, method="smoothgrad", n_samples=args.samples, seed=0, **settings),
    }
    tools = {"inference": inference, "autograd": autograd}
    tools.update({name: (lambda e=engine: e(x, classes=1)) for name, engine in engines.items()})
    passes = {}
    for name, fn in tools.items():
        windows[0] = 0
        fn()
        passes[name] = windows[0]
    times = median_times(tools, repeats=args.repeats, warmup=0)
    print(f"{args.size}³, windows {args.roi}³ ({passes['inference']} windows), torch {torch.__version__}, 1 thread")
    print(f"{'way':<22} {'time (s)':>9} {'× autograd':>11} {'window forwards':>16}")
    for name in tools:
        print(f"{name:<22} {times[name]:>9.2f} {times[name] / times['autograd']:>11.2f} {passes[name]:>16}")


if __name__ == "__main__":
    main()
