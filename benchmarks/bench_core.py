# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Whole-volume SegCAM vs plain inference, a hand-written minimal reference and MONAI's own GradCAM.

Model: ``UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)`` (untrained, seeded), region = voxels
predicted as class 1, layers ``bottleneck`` and ``pre_head``, 96³ and 160³. Times are medians of round-robin
samples in one process; peak RSS comes from one fresh process per tool (includes interpreter, torch and MONAI).

Run: ``python benchmarks/bench_core.py`` (``--sizes 96 --repeats 3`` for a quick run).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from monai.visualize import GradCAM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_times, peak_rss_in_subprocess, report_child_peak, reset_peak_rss

from monai_segcam import SegCAM, layer_presets
from monai_segcam.cam.regions import class_masks

CLASS = 1


def build(size: int):
    torch.manual_seed(0)
    net = UNet(3, 1, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2).eval()
    x = torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(1))
    return net, x


def forward_only(net, x, layer):
    with torch.no_grad():
        return net(x)


def minimal_reference(net, x, layer, method="hirescam"):
    """Forward hook + autograd.grad on frozen parameters, pairwise-compare mask: the cheapest honest CAM."""
    module = dict(net.named_modules())[layer]
    store = {}

    def hook(_m, _i, out):
        leaf = out.detach().requires_grad_(True)
        store["a"] = leaf
        return leaf.clone()

    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    handle = module.register_forward_hook(hook)
    try:
        logits = net(x)
        mask = class_masks(logits.detach(), [CLASS])
        (g,) = torch.autograd.grad(logits, store["a"], torch.zeros_like(logits).index_copy_(1, torch.tensor([CLASS]), mask.float()))
    finally:
        handle.remove()
        for p, f in zip(net.parameters(), flags):
            p.requires_grad_(f)
    a = store["a"].detach()
    raw = (g.mean((2, 3, 4), keepdim=True) * a if method == "gradcam" else g * a).sum(1, keepdim=True)
    return F.interpolate(raw, size=x.shape[2:], mode="trilinear", align_corners=False).relu()


class MaskedScore(torch.nn.Module):
    """Wrapper that makes MONAI's classification GradCAM explain a masked region score (the peer-baselines setup)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        mask = class_masks(logits.detach(), [CLASS])[:, 0]
        return (logits[:, CLASS] * mask).flatten(1).sum(1, keepdim=True)


def one_hot_region(logits):
    """medcam's gradient mask: the class-1 region on channel 1, zeros elsewhere."""
    mask = torch.zeros_like(logits)
    mask[:, CLASS] = class_masks(logits.detach(), [CLASS])[:, 0]
    return mask


def peer_tools(net, x, layer) -> dict:
    """Peers installed from PyPI, when present (``pip install captum medcam opencv-python-headless``; medcam imports cv2), used as their docs show."""
    peers = {}
    if importlib.util.find_spec("captum"):
        from captum.attr import LayerAttribution, LayerGradCam

        wrapper = MaskedScore(net)
        captum_cam = LayerGradCam(wrapper, dict(wrapper.named_modules())[f"net.{layer}"])

        def captum_gradcam():
            attr = captum_cam.attribute(x, target=0, relu_attributions=True)
            return LayerAttribution.interpolate(attr, tuple(x.shape[2:]), interpolate_mode="trilinear")

        peers["captum LayerGradCam (masked wrapper)"] = captum_gradcam
    if importlib.util.find_spec("medcam"):
        from medcam import medcam

        injected = medcam.inject(copy.deepcopy(net), backend="gcam", layer=layer, label=one_hot_region, replace=True)
        peers["medcam gcam (mask label)"] = lambda: injected(x)
    return peers


def tools(net, x, layer):
    segcam_hires = SegCAM(net, layers=layer, method="hirescam")
    segcam_grad = SegCAM(net, layers=layer, method="gradcam")
    monai_gradcam = GradCAM(MaskedScore(net), target_layers=f"net.{layer}", postprocessing=lambda m: m)
    return {
        "forward (no_grad)": lambda: forward_only(net, x, layer),
        "minimal reference HiRes": lambda: minimal_reference(net, x, layer),
        "SegCAM hirescam": lambda: segcam_hires(x, classes=CLASS),
        "minimal reference Grad-CAM": lambda: minimal_reference(net, x, layer, "gradcam"),
        "SegCAM gradcam": lambda: segcam_grad(x, classes=CLASS),
        "MONAI GradCAM (masked wrapper)": lambda: monai_gradcam(x, class_idx=0),
        **peer_tools(net, x, layer),
    }


def check_agreement(net, x, layer) -> float:
    ours = SegCAM(net, layers=layer, method="gradcam")(x, classes=CLASS).map.as_tensor()
    ref = minimal_reference(net, x, layer, "gradcam")
    return float((ours - ref).abs().max() / ref.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 160])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-tool peak-RSS subprocesses")
    parser.add_argument("--memory-child", nargs=3, metavar=("SIZE", "ROLE", "TOOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if args.memory_child:
        reset_peak_rss()
        size, role, tool = args.memory_child
        net, x = build(int(size))
        tools(net, x, layer_presets(net)[role])[tool]()
        report_child_peak()
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    for size in args.sizes:
        net, x = build(size)
        for role in ("bottleneck", "pre_head"):
            layer = layer_presets(net)[role]
            times = median_times(tools(net, x, layer), repeats=args.repeats)
            base = times["forward (no_grad)"]
            print(f"\n## {size}³, {role} ({layer}); max rel. difference SegCAM vs reference: {check_agreement(net, x, layer):.1e}")
            print("| tool | time (s) | × forward | × minimal reference | peak RSS (MiB) |\n|---|---|---|---|---|")
            for name, t in times.items():
                ref = times["minimal reference HiRes" if "hires" in name.lower() else "minimal reference Grad-CAM"]
                rss = "" if args.no_memory else f"{peak_rss_in_subprocess(__file__, str(size), role, name):.0f}"
                print(f"| {name} | {t:.3f} | {t / base:.2f} | {t / ref:.2f} | {rss} |")


if __name__ == "__main__":
    main()
