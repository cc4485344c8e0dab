# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Wrapped networks (DistributedDataParallel, DataParallel, torch.compile): layer names with and without the
wrapper's prefix resolve, the maps equal the bare network's, and the wrapper is left as it was."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from helpers_reliability import assert_untouched, set_mixed_state, small_unet, snapshot
from torch import nn

from monai_segcam import SegCAM, SlidingWindowSegCAM


def _cams(wrapped: nn.Module, bare: nn.Module, prefix: str, method: str = "gradcam"):
    """Pairs (wrapped-network CAM, bare-network CAM) for both engines and both ways of naming the layers."""
    for engine in (SegCAM, lambda net, **kw: SlidingWindowSegCAM(net, roi_size=(8, 8, 4), overlap=0.25, **kw)):
        expected = engine(bare, layers=["model.1", "bottleneck"], method=method)
        for names in (["model.1", "bottleneck"], [f"{prefix}model.1", "bottleneck"]):
            yield engine(wrapped, layers=names, method=method), expected, names


def _check_same_maps(wrapped: nn.Module, bare: nn.Module, prefix: str, atol: float = 1e-6) -> None:
    image = torch.randn(2, 1, 8, 8, 8)
    for cam, expected_cam, names in _cams(wrapped, bare, prefix):
        maps, expected = cam(image, classes=[1, 2]), expected_cam(image, classes=[1, 2])
        for name, key in zip(names, ["model.1", "bottleneck"]):
            torch.testing.assert_close(maps[name].as_tensor(), expected[key].as_tensor(), rtol=1e-5, atol=atol)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_distributed_data_parallel(tmp_path):
    """DDP in a single-process gloo group: 'model.1' and 'module.model.1' resolve, maps equal the bare network's,
    no hook or state change is left, the DDP wrapper's own forward is never run (it may broadcast buffers, a
    collective: a CAM computed on one rank only would block), and the DDP model still trains afterwards."""
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    elif dist.get_world_size() != 1:
        pytest.skip("a multi-process group is already initialised")
    try:
        bare = small_unet()
        ddp = nn.parallel.DistributedDataParallel(bare)
        before = snapshot(ddp)
        ddp_forward_calls = []
        ddp.forward = lambda *args, **kwargs: ddp_forward_calls.append(1) or type(ddp).forward(ddp, *args, **kwargs)
        _check_same_maps(ddp, bare, "module.")
        assert ddp_forward_calls == []
        del ddp.forward
        assert_untouched(ddp, before)
        for _ in range(2):  # CAM calls between training steps do not upset DDP's reducer
            ddp(torch.randn(1, 1, 8, 8, 8)).sum().backward()
            SegCAM(ddp, layers="module.model.1")(torch.randn(1, 1, 8, 8, 8)).map
        assert all(p.grad is not None for p in ddp.parameters())
    finally:
        if started:
            dist.destroy_process_group()


def test_data_parallel():
    """``nn.DataParallel`` (CPU: it calls the module): both names resolve and the maps equal the bare network's."""
    bare = small_unet()
    wrapped = nn.DataParallel(bare)
    before = set_mixed_state(wrapped)
    _check_same_maps(wrapped, bare, "module.")
    assert_untouched(wrapped, before)


class HandCompiled(nn.Module):
    """A stand-in for torch.compile's ``OptimizedModule``: holds the network as ``_orig_mod`` and forwards to it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self._orig_mod = net

    def forward(self, x):
        return self._orig_mod(x)


def test_orig_mod_wrapper_and_nested_wrappers():
    """An ``_orig_mod`` wrapper, and DataParallel around it ('module._orig_mod.model.1'), resolve like the bare net."""
    bare = small_unet()
    _check_same_maps(HandCompiled(bare), bare, "_orig_mod.")
    _check_same_maps(nn.DataParallel(HandCompiled(bare)), bare, "module._orig_mod.")


def test_torch_compile_eager_backend():
    """``torch.compile`` (eager backend: Dynamo's tracing and guards, no C++ build), already run once: '_orig_mod.'
    names resolve, maps equal the bare network's, and no hook survives."""
    bare = small_unet()
    compiled = torch.compile(bare, backend="eager")
    with torch.no_grad():
        compiled(torch.randn(2, 1, 8, 8, 8))
    before = snapshot(compiled)
    _check_same_maps(compiled, bare, "_orig_mod.")
    assert_untouched(compiled, before)


INDUCTOR_CHECK = """
import torch
from monai.networks.nets import DynUNet
from monai_segcam import SegCAM

torch.manual_seed(0)
bare = DynUNet(3, 1, 3, [3, 3, 3], [1, 2, 2], [2, 2]).eval()
compiled = torch.compile(bare)
image = torch.randn(1, 1, 8, 8, 8)
with torch.no_grad():
    compiled(image)  # the model was used (and compiled) for inference before being explained
maps = SegCAM(compiled, layers=["_orig_mod.bottleneck", "pre_head"], method="hirescam")(image, classes=[1, 2])
expected = SegCAM(bare, layers=["bottleneck", "pre_head"], method="hirescam")(image, classes=[1, 2])
for key, name in zip(["_orig_mod.bottleneck", "pre_head"], ["bottleneck", "pre_head"]):
    torch.testing.assert_close(maps[key].as_tensor(), expected[name].as_tensor(), rtol=1e-4, atol=1e-5)
assert all(not m._forward_hooks for m in bare.modules())
"""


@pytest.mark.slow
def test_torch_compile_inductor():
    """``torch.compile`` with the default (inductor) backend and several classes (a VJP per class on one forward):
    the same maps as the bare network. A compiled backward refuses ``retain_graph``, so the engines run the bare
    network (the hooks are on its modules anyway). Run in a fresh interpreter: inductor keeps process-wide state
    (caches, compile workers) that earlier tests must not influence."""
    result = subprocess.run([sys.executable, "-c", INDUCTOR_CHECK], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
