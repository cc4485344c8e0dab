# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Shared helpers of the reliability tests: small networks and checks that a CAM call left a network untouched."""

from __future__ import annotations

import gc
import os

import torch
from monai.networks.nets import UNet
from torch import nn


def small_unet(spatial_dims: int = 3, **kwargs) -> nn.Module:
    """The small MONAI UNet used throughout: 3 output channels, 2 down-sampling stages."""
    return UNet(spatial_dims, 1, 3, (4, 8, 16), (2, 2), **kwargs)


def rss_mb() -> float:
    """Resident set size of this process in MiB, from ``/proc/self/statm`` (psutil is not a dependency)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensors() -> int:
    """Number of ``torch.Tensor`` objects alive after a full garbage collection."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def set_mixed_state(net: nn.Module) -> dict:
    """Put ``net`` in a mixed state (train mode with some submodules in eval, some parameters frozen) and return it."""
    net.train()
    for i, module in enumerate(net.modules()):
        if i % 3 == 1:
            module.eval()
    for i, param in enumerate(net.parameters()):
        param.requires_grad_(i % 2 == 0)
        param.grad = None
    return snapshot(net)


def snapshot(net: nn.Module) -> dict:
    """Every module's train flag, every parameter's ``requires_grad`` and ``grad``, and a copy of the buffers."""
    return {
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "grads": [p.grad for p in net.parameters()],
        "buffers": [b.clone() for b in net.buffers()],
    }


def assert_untouched(net: nn.Module, before: dict) -> None:
    """No hook on any module, and train flags, ``requires_grad``, ``.grad`` and buffers as in ``before``."""
    for name, module in net.named_modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert len(getattr(module, hooks, {})) == 0, f"{hooks} left on {name or 'the network'}"
    assert [m.training for m in net.modules()] == before["training"], "train/eval flags not restored"
    assert [p.requires_grad for p in net.parameters()] == before["requires_grad"], "requires_grad not restored"
    assert all(p.grad is g for p, g in zip(net.parameters(), before["grads"])), "a parameter .grad was written"
    for b, old in zip(net.buffers(), before["buffers"]):
        assert torch.equal(b, old), "a buffer (e.g. BatchNorm running statistics) changed"


def assert_detached(maps) -> None:
    """Returned maps (a CAMResult) keep no autograd graph."""
    for value in maps.values():
        assert value.grad_fn is None and not value.requires_grad
