# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Our CAMs against independent peer implementations on MONAI's UNet, BasicUNet and SegResNet (docs/peers.md).

Same network, layer, region (the predicted class-1 mask ``M``) and target (``S = sum_v M(v) y_1(v)``), raw maps
before any ReLU or normalisation, the peers' layer-grid maps upsampled like ours (trilinear, ``align_corners=False``).
Reported per (method, peer): the largest relative difference ``max |ours - peer| / max |peer|`` over networks and
layers, in float64 and float32, and the Pearson correlation where they differ.

The peers are never dependencies of the package: install them next to it without theirs,

    pip install --no-deps --target /tmp/peers grad-cam==1.5.7 torchcam==0.5.0 ttach==0.0.3
    PYTHONPATH=.:/tmp/peers python benchmarks/compare_peers.py

pytorch-grad-cam imports OpenCV and torchvision at import time for 2D images and detection only; stubs stand in for
them when they cannot be imported (3D maps never reach them). captum is in the ``test`` extra. A peer that is not importable is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, SegResNet, UNet

from monai_segcam import SegCAM, layer_presets

__all__ = ["NETWORKS", "peer_maps", "compare", "main"]

NETWORKS: dict[str, Callable[[], torch.nn.Module]] = {
    "UNet": lambda: UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1),
    "BasicUNet": lambda: BasicUNet(3, 1, 3, features=(8, 8, 16, 32, 64, 8)),
    "SegResNet": lambda: SegResNet(spatial_dims=3, in_channels=1, out_channels=3, init_filters=8),
}
ROLES = ("encoder.1", "bottleneck", "decoder.0", "pre_head")
CLS = 1
# our method -> {peer: how to call it}
PGC = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "layercam": "LayerCAM", "xgradcam": "XGradCAM",
       "gradcampp": "GradCAMPlusPlus", "eigencam": "EigenCAM"}  # fmt: skip
TORCHCAM = {"gradcam": "GradCAM", "layercam": "LayerCAM", "xgradcam": "XGradCAM", "gradcampp": "GradCAMpp"}
CAPTUM = {"gradcam": "LayerGradCam", "hirescam": "LayerGradientXActivation"}
EIGEN_MAX_POSITIONS = 4096  # pytorch-grad-cam's Eigen-CAM takes a full SVD (positions x positions)


class _Stub(types.ModuleType):
    def __getattr__(self, name: str) -> None:  # constants such as cv2.COLORMAP_JET read at import time
        return None


def _stub(name: str, **names) -> None:
    module = _Stub(name)
    module.__dict__.update(names)
    sys.modules[name] = module


def _stub_pytorch_grad_cam_imports() -> None:
    """Stand-ins for what pytorch-grad-cam imports only for 2D images and detection (OpenCV, torchvision), when they
    cannot be imported; its 3D CAMs use neither."""
    if "cv2" not in sys.modules and importlib.util.find_spec("cv2") is None:
        _stub("cv2")
    try:
        importlib.import_module("torchvision.transforms")
    except Exception:  # missing, or built for another torch
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        _stub("torchvision", ops=None)
        _stub("torchvision.transforms", Compose=None, Normalize=None, ToTensor=None)
        _stub("torchvision.transforms.functional", resize=None)


def _optional(name: str):
    try:
        if name == "pytorch_grad_cam":
            _stub_pytorch_grad_cam_imports()
        return importlib.import_module(name)
    except Exception as error:  # a peer that cannot be imported is skipped
        print(f"skipping {name}: {type(error).__name__}: {error}")
        return None


def _up(raw: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(raw, size=tuple(size), mode="trilinear", align_corners=False)


def _score(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda out: (out[:, CLS] * mask[:, 0]).flatten(1).sum(1)


def peer_maps(peer: str, module_lib, net, module, x, mask, method: str) -> torch.Tensor | None:
    """The peer's raw map ``(1, 1, *x.shape[2:])`` of ``method`` at ``module``, or ``None`` where it has none."""
    score = _score(mask)
    if peer == "captum":
        name = CAPTUM.get(method)
        if name is None:
            return None
        raw = getattr(module_lib.attr, name)(lambda inputs: score(net(inputs)), module).attribute(x)
        return _up(raw if name == "LayerGradCam" else raw.sum(1, keepdim=True), x.shape[2:]).detach()
    if peer == "pytorch-grad-cam":
        name = PGC.get(method)
        if name is None:
            return None
        cam = getattr(module_lib, name)(model=net, target_layers=[module])
        try:
            outputs = cam.activations_and_grads(x)
            net.zero_grad()
            score(outputs).sum().backward()
            acts = cam.activations_and_grads.activations[0].cpu().numpy()
            grads = cam.activations_and_grads.gradients[0].cpu().numpy()
            if method == "eigencam" and np.prod(acts.shape[2:]) > EIGEN_MAX_POSITIONS:
                return None
            raw = cam.get_cam_image(x, module, [score], acts, grads, False)
        finally:
            cam.activations_and_grads.release()
        return _up(torch.as_tensor(np.asarray(raw, dtype=np.float64))[:, None].to(x.dtype), x.shape[2:])
    name = TORCHCAM.get(method)
    if name is None:
        return None
    wrapped = _Scored(net, mask)
    extractor = getattr(module_lib.methods, name)(wrapped, target_layer=module, input_shape=tuple(x.shape[1:]))
    try:
        extractor._relu = False  # raw maps
        out = wrapped(x)
        raw = extractor(0, out, normalized=False)[0]
    finally:
        extractor.remove_hooks()
    return _up(raw[:, None].detach().to(x.dtype), x.shape[2:])


class _Scored(torch.nn.Module):
    """The network with the region score as a one-class output ``(B, 1)`` (torchcam scores ``out[:, class]``)."""

    def __init__(self, net: torch.nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.net, self.mask = net, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _score(self.mask)(self.net(x))[:, None]


def compare(dtype: torch.dtype, size: int = 32) -> dict[tuple[str, str], list[tuple[float, float, str]]]:
    """``{(method, peer): [(relative difference, correlation, where), ...]}`` over networks and layers; maps we
    return as exact zeros (float round-off, see monai_segcam.cam.roundoff) are listed with ``where`` ending in
    ``"(ours: zero map)"``."""
    peers = {"captum": _optional("captum.attr") and _optional("captum"), "pytorch-grad-cam": _optional("pytorch_grad_cam"),
             "torchcam": _optional("torchcam.methods") and _optional("torchcam")}  # fmt: skip
    results: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for net_name, build in NETWORKS.items():
        torch.manual_seed(0)
        net = build().to(dtype).eval()
        x = torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)
        with torch.no_grad():
            mask = (net(x).argmax(1, keepdim=True) == CLS).to(dtype)
        modules = dict(net.named_modules())
        presets = layer_presets(net)
        for role in ROLES:
            layer = presets[role]
            for method in sorted(set(PGC) | set(TORCHCAM) | set(CAPTUM)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ours = SegCAM(net, layers=layer, method=method, relu=False)(x, classes=CLS, region=mask)
                ours_map = ours.map.as_tensor().detach()
                for peer, lib in peers.items():
                    if lib is None:
                        continue
                    try:
                        theirs = peer_maps(peer, lib, net, modules[layer], x, mask, method)
                    except Exception as error:  # a peer's failure is reported, not fatal
                        print(f"{peer} {method} {net_name} {role}: {type(error).__name__}: {error}")
                        continue
                    if theirs is None:
                        continue
                    scale = float(theirs.abs().max())
                    diff = float((ours_map - theirs).abs().max()) / scale if scale > 0 else float("nan")
                    corr = float(torch.corrcoef(torch.stack([ours_map.flatten(), theirs.flatten()]).double())[0, 1])
                    where = f"{net_name} {role}" + (" (ours: zero map)" if not ours_map.any() else "")
                    results.setdefault((method, peer), []).append((diff, corr, where))
                    print(f"{dtype} {net_name:9s} {role:10s} {method:9s} {peer:16s} rel. diff {diff:.1e} corr {corr:+.4f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="input edge (voxels)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = {dtype: compare(dtype, args.size) for dtype in (torch.float64, torch.float32)}
    print("\n| method | peer | max rel. diff float64 | max rel. diff float32 | min corr. float64 | ours: zero map |")
    print("|---|---|---|---|---|---|")
    for key in sorted(set(table[torch.float64]) | set(table[torch.float32])):
        cells, zeros = [], []
        for dtype in (torch.float64, torch.float32):
            rows = table[dtype].get(key, [])
            real = [r for r in rows if not r[2].endswith("(ours: zero map)")]
            zeros += [f"{r[2][:-17]} {str(dtype)[6:]}" for r in rows if r not in real]
            cells.append(f"{max(r[0] for r in real):.1e}" if real else "n/a")
        f64 = [r for r in table[torch.float64].get(key, []) if not r[2].endswith("(ours: zero map)")]
        corr = f"{min(r[1] for r in f64):+.3f}" if f64 else "n/a"
        print(f"| {key[0]} | {key[1]} | {cells[0]} | {cells[1]} | {corr} | {', '.join(zeros) or '-'} |")


if __name__ == "__main__":
    main()
