# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from scipy import stats

from monai_segcam.metrics import cascading_randomization, pearson_correlation, spearman_rank_correlation


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_and_pearson_match_scipy(ties):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 5, 6, generator=g)
    b = 0.5 * a + torch.randn(4, 5, 6, generator=g)
    if ties:  # many tied values, including ties in both inputs
        a, b = (a * 2).round(), (b * 2).round().clamp(-2, 2)
    expected = stats.spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic
    assert spearman_rank_correlation(a, b).item() == pytest.approx(expected, abs=1e-12)
    expected = stats.pearsonr(a.flatten().double().numpy(), b.flatten().double().numpy()).statistic
    assert pearson_correlation(a, b).item() == pytest.approx(expected, abs=1e-12)


def test_spearman_known_values():
    x = torch.arange(10.0)
    assert spearman_rank_correlation(x, x**3).item() == pytest.approx(1.0)  # monotone, not linear
    assert spearman_rank_correlation(x, -torch.exp(x)).item() == pytest.approx(-1.0)
    with pytest.warns(UserWarning, match="constant"):
        assert spearman_rank_correlation(x, torch.ones(10)).isnan()
    with pytest.raises(ValueError, match="same shape"):
        spearman_rank_correlation(x, torch.ones(9))


class _Linear(torch.nn.Module):
    """x -> w.x over channels: a 1x1x1-conv segmentation "network" whose HiRes map is w.x."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv3d(channels, 1, kernel_size=1, bias=False)

    def forward(self, x):
        return self.conv(x)


def test_linear_model_map_decorrelates():
    torch.manual_seed(0)
    net = _Linear(32)
    x = torch.randn(1, 32, 8, 8, 8)
    seen = []

    def cam_fn(model):  # the HiRes map of the whole-volume score, written by hand
        seen.append(model.conv.weight.detach().clone())
        return (model.conv.weight * x).sum(1, keepdim=True)

    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.warns(UserWarning, match="registration order used"):  # cam_fn reads the weights, never calls forward
        steps = cascading_randomization(cam_fn, net, absolute=False, return_maps=True)
    assert [s.modules for s in steps] == [("conv",)]
    original, randomized = [(w * x).sum(1) for w in seen]
    assert not torch.equal(seen[0], seen[1])
    torch.testing.assert_close(steps[0].cam[:, 0], randomized)
    assert steps[0].pearson == pytest.approx(pearson_correlation(original, randomized).item())
    assert abs(steps[0].pearson) < 0.3 and abs(steps[0].spearman) < 0.3  # random weights: about 0
    # the user's network and the global RNG are untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    torch.testing.assert_close(seen[0], before["conv.weight"])
    assert torch.equal(rng, torch.get_rng_state())


class _HeadFirst(torch.nn.Module):
    """Registers its head before its body, so registration order differs from execution order."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv3d(3, 2, 1)
        self.body = torch.nn.Conv3d(1, 3, 1)
        self.scale = _Scale()
        self.unused = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.scale(self.body(x)))


class _Scale(torch.nn.Module):
    """A parameterised module without ``reset_parameters``: randomised with noise."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.linspace(0.5, 1.5, 3).view(1, 3, 1, 1, 1))

    def forward(self, x):
        return self.gain * x


def test_cascade_order_is_cumulative_and_seeded():
    torch.manual_seed(0)
    net = _HeadFirst()
    x = torch.randn(1, 1, 6, 6, 6)
    seen = []

    def cam_fn(model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model(x)[:, 1:]

    steps = cascading_randomization(cam_fn, net)
    assert [s.modules for s in steps] == [("head",), ("scale",), ("body",)]  # reverse execution, unused skipped
    original, after_head, after_scale, after_body = seen
    assert not torch.equal(after_head["head.weight"], original["head.weight"])
    assert torch.equal(after_head["scale.gain"], original["scale.gain"])
    assert torch.equal(after_scale["head.weight"], after_head["head.weight"])  # cumulative
    assert not torch.equal(after_scale["scale.gain"], original["scale.gain"])  # noise fallback
    assert torch.equal(after_body["scale.gain"], after_scale["scale.gain"])
    assert not torch.equal(after_body["body.weight"], original["body.weight"])
    assert torch.equal(after_body["unused.weight"], original["unused.weight"])

    again = cascading_randomization(cam_fn, net)
    assert [(s.spearman, s.pearson) for s in again] == [(s.spearman, s.pearson) for s in steps]
    other_seed = cascading_randomization(cam_fn, net, seed=1)
    assert [s.spearman for s in other_seed] != [s.spearman for s in steps]

    registration = cascading_randomization(cam_fn, net, order="registration")
    assert [s.modules for s in registration] == [("unused",), ("scale",), ("body",), ("head",)]

    grouped = cascading_randomization(cam_fn, net, layers=["head", ["scale", "body"]])
    assert [s.modules for s in grouped] == [("head",), ("scale", "body")]
    with pytest.raises(ValueError, match="unknown"):
        cascading_randomization(cam_fn, net, layers=["tail"])
    with pytest.raises(ValueError):
        cascading_randomization(cam_fn, net, order="random")


def test_monai_unet_cascade_from_head_to_input():
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    x = torch.randn(1, 1, 16, 16, 16)

    def cam_fn(model):  # gradient x input of the class-1 region score, written by hand
        model.eval()
        image = x.clone().requires_grad_(True)
        logits = model(image)
        score = (logits[:, 1] * (logits.argmax(1) == 1)).sum()
        return (torch.autograd.grad(score, image)[0] * image).detach()

    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    steps = cascading_randomization(cam_fn, net)
    parameterised = [name for name, m in net.named_modules() if list(m.parameters(recurse=False))]
    assert [s.modules[0] for s in steps] == parameterised[::-1]
    assert steps[0].modules == ("model.2.conv",)  # the output head first
    assert all(-1 <= s.spearman <= 1 and -1 <= s.pearson <= 1 for s in steps)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
