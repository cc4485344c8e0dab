# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Mixed precision: bfloat16 CAMs on CPU agree with float32 on the planted-evidence volumes; float16 on CUDA."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from monai_segcam import SegCAM, SlidingWindowSegCAM
from monai_segcam.data.planted import make_planted_case

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "planted_evidence"))
from common import HELD_OUT_SEED, load_network

ROI = (40, 40, 32)  # two windows along the last axis: the planted networks need most of the 40³ context


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def predicted_case(task: str, net: torch.nn.Module) -> tuple[torch.Tensor, int]:
    """The first held-out case whose planted class the network predicts (at least 100 voxels)."""
    for seed in range(HELD_OUT_SEED, HELD_OUT_SEED + 20):
        case = make_planted_case(task, seed=seed)
        x, cls = torch.as_tensor(case["image"])[None].float(), int(case.get("class", 1))
        with torch.no_grad():
            if (net(x).argmax(1) == cls).sum() >= 100:
                return x, cls
    raise AssertionError(f"no held-out {task} case is predicted")


@pytest.mark.parametrize("task", ["marker", "two_objects"])
@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
def test_bfloat16_matches_float32_on_planted_evidence(task, method):
    """bfloat16 autocast against float32, for the region of the float32 prediction (given) and for the region of
    the bfloat16 prediction (one pass): correlation >= 0.99 and the same peak voxel."""
    net = load_network(task)
    x, cls = predicted_case(task, net)
    layers = ["bottleneck", "pre_head"]
    kwargs = {"layers": layers, "method": method, "overlap": 0.5, "mode": "gaussian", "relu": False}
    full = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=cls)
    assert full.region.sum() > 100
    same_region = SlidingWindowSegCAM(net, ROI, amp=True, **kwargs)(x, classes=cls, pred=full.prediction)
    one_pass = SlidingWindowSegCAM(net, ROI, amp=True, **kwargs)(x, classes=cls)
    assert (one_pass.region != full.region).float().mean() < 0.01  # bfloat16 logits flip few boundary voxels
    for half in (same_region, one_pass):
        for key in layers:
            assert half[key].dtype == torch.float32 and torch.isfinite(half[key]).all()
            assert full[key].abs().max() > 0
            assert correlation(half[key], full[key]) >= 0.99, key
            assert int(half[key].argmax()) == int(full[key].argmax()), key


def test_amp_gradients_are_scaled_and_unscaled_exactly():
    """A cotangent far below float16's smallest normal still gives the float32 gradient: the scale is a power of
    two chosen from the cotangent and removed exactly."""
    from monai_segcam.cam.terms import term_gradients

    w = torch.randn(3, 5, dtype=torch.float32)
    acts = torch.randn(2, 5, dtype=torch.float16, requires_grad=True)
    logits = acts.float() @ w.T
    cotangent = torch.full_like(logits, 1e-9)
    scaled = term_gradients(logits, {"a": [acts]}, cotangent, scaled=True)["a"][0]
    plain = term_gradients(acts.float() @ w.T, {"a": [acts]}, cotangent)["a"][0]
    assert plain.dtype == torch.float16 and scaled.dtype == torch.float32
    expected = (cotangent @ w).float()
    torch.testing.assert_close(scaled, expected, rtol=2e-3, atol=0)
    assert not torch.allclose(plain.float(), expected, rtol=0.1, atol=0)  # unscaled float16 underflows


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (float16 autocast)")
def test_float16_on_cuda_matches_float32():
    net = load_network("two_objects")
    x, cls = predicted_case("two_objects", net)
    net, x = net.cuda(), x.cuda()
    full = SegCAM(net, layers="pre_head", relu=False)(x, classes=cls)
    half = SegCAM(net, layers="pre_head", relu=False, amp=True)(x, classes=cls, pred=full.prediction).map
    full = full.map
    assert correlation(half, full) >= 0.99 and int(half.argmax()) == int(full.argmax())
