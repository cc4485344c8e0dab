# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The CAM rules and the method registry (cam/methods.py) on tiny tensors: every rule's local map, statistics,
weights and combination against its closed form written out voxel by voxel, statistics that add up over windows,
and the registry (names, registration, close names in errors)."""

from __future__ import annotations

import itertools

import pytest
import torch

from monai_segcam.cam import CAMRule, ScoreCAMRule, get_rule, method_names, register_method
from monai_segcam.cam.methods import (
    EigenCAMRule,
    GradCAMPlusPlusReLURule,
    GradCAMPlusPlusRule,
    LayerCAMRule,
    SegGradCAMRule,
    SegHiResCAMRule,
    SegXResCAMRule,
    XGradCAMRule,
)

B, K, S = 2, 3, (4, 3, 2)
EPS = 1e-7  # the rules' guard against division by zero


def tensors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    acts = torch.randn(B, K, *S, dtype=torch.float64, generator=generator)
    grads = torch.randn(B, K, *S, dtype=torch.float64, generator=generator)
    grads[0, 1, 0, 0, 0] = 0.0  # a zero gradient (Grad-CAM++'s alpha is 0 there)
    return acts, grads


def voxels():
    return list(itertools.product(*(range(s) for s in S)))


def by_voxel(value) -> torch.Tensor:
    """A (B, 1, *S) map from ``value(b, voxel)``."""
    out = torch.zeros(B, 1, *S, dtype=torch.float64)
    for b in range(B):
        for v in voxels():
            out[(b, 0, *v)] = value(b, v)
    return out


def weighted_sum(acts: torch.Tensor, weights: torch.Tensor, offset=None) -> torch.Tensor:
    return by_voxel(lambda b, v: sum(weights[b, k] * acts[(b, k, *v)] for k in range(K)) + (0 if offset is None else offset[b]))


def test_registry_names_in_registration_order_and_rule_classes():
    assert method_names()[:9] == ["gradcam", "hirescam", "xrescam", "gradcampp", "gradcampp_relu", "xgradcam",
                                  "layercam", "eigencam", "scorecam"]  # fmt: skip
    classes = [SegGradCAMRule, SegHiResCAMRule, SegXResCAMRule, GradCAMPlusPlusRule, GradCAMPlusPlusReLURule,
               XGradCAMRule, LayerCAMRule, EigenCAMRule, ScoreCAMRule]  # fmt: skip
    for name, cls in zip(method_names(), classes):
        rule = get_rule(name)
        assert type(rule) is cls and rule.method_name == name
    assert [r.local for r in map(get_rule, method_names()[:9])] == [False, True, True, False, False, False, True,
                                                                    False, False]  # fmt: skip
    assert not get_rule("eigencam").needs_gradients and not get_rule("scorecam").needs_gradients


def test_get_rule_passes_options_and_keeps_instances():
    rule = get_rule("xrescam", pool_size=3, pool_mode="mean")
    assert (rule.pool_size, rule.pool_mode) == (3, "mean")
    assert get_rule(rule) is rule
    with pytest.raises(TypeError):
        get_rule("gradcam", pool_size=2)
    with pytest.raises(ValueError, match="max"):
        get_rule("xrescam", pool_mode="median")


def test_unknown_method_lists_close_names():
    with pytest.raises(ValueError, match=r"Unknown CAM method 'hirescm'. Did you mean \['hirescam'"):
        get_rule("hirescm")
    with pytest.raises(ValueError, match=r"Registered methods: \['gradcam', 'hirescam'"):
        get_rule("zzzz")


def test_registered_method_is_a_name_everywhere():
    @register_method("test_poshirescam")
    class PositiveHiResCAM(CAMRule):  # the register_method docstring's example
        local = True

        def local_map(self, acts, grads):
            return (grads.clamp_min(0) * acts.clamp_min(0)).sum(1, keepdim=True)

    assert "test_poshirescam" in method_names() and PositiveHiResCAM.name == "test_poshirescam"
    assert isinstance(get_rule("test_poshirescam"), PositiveHiResCAM)
    assert register_method("test_poshirescam")(PositiveHiResCAM) is PositiveHiResCAM  # the same class again: fine
    from monai_segcam.cli.main import build_parser

    args = build_parser().parse_args(["explain", "x.nii.gz", "--bundle", "b", "--output", "o", "--method", "test_poshirescam"])
    assert args.method == ["test_poshirescam"]
    with pytest.raises(ValueError, match="already registered for SegHiResCAMRule"):
        register_method("hirescam")(PositiveHiResCAM)
    assert type(get_rule("hirescam")) is SegHiResCAMRule


def test_unregistered_rule_is_named_by_its_class_and_base_methods_say_what_is_missing():
    class Mine(CAMRule):
        pass

    assert Mine().method_name == "Mine"
    acts, grads = tensors()
    with pytest.raises(NotImplementedError, match="global-weight"):
        Mine().local_map(acts, grads)
    with pytest.raises(NotImplementedError, match="local rule"):
        Mine()(acts, grads)


def test_local_rules_closed_forms():
    acts, grads = tensors()
    hires = by_voxel(lambda b, v: sum(grads[(b, k, *v)] * acts[(b, k, *v)] for k in range(K)))
    torch.testing.assert_close(get_rule("hirescam")(acts, grads), hires)
    layercam = by_voxel(lambda b, v: sum(max(grads[(b, k, *v)], 0) * acts[(b, k, *v)] for k in range(K)))
    torch.testing.assert_close(get_rule("layercam")(acts, grads), layercam)
    torch.testing.assert_close(get_rule("xrescam", pool_size=1)(acts, grads), hires)


@pytest.mark.parametrize("pool_mode", ["max", "mean"])
def test_xrescam_pools_gradient_blocks_ceil_mode(pool_mode):
    """Blocks of 2 over (4, 3, 2): the last block of the odd axis holds one voxel (its own max / mean)."""
    acts, grads = tensors(1)
    reduce = max if pool_mode == "max" else (lambda values: sum(values) / len(values))

    def pooled(b, k, v):
        block = [w for w in voxels() if all(wi // 2 == vi // 2 for wi, vi in zip(w, v))]
        return reduce([grads[(b, k, *w)] for w in block])

    expected = by_voxel(lambda b, v: sum(pooled(b, k, v) * acts[(b, k, *v)] for k in range(K)))
    torch.testing.assert_close(get_rule("xrescam", pool_size=2, pool_mode=pool_mode)(acts, grads), expected)


def test_gradcam_and_xgradcam_closed_forms():
    acts, grads = tensors()
    n = len(voxels())
    mean_grad = torch.tensor([[sum(grads[(b, k, *v)] for v in voxels()) / n for k in range(K)] for b in range(B)])
    torch.testing.assert_close(get_rule("gradcam")(acts, grads), weighted_sum(acts, mean_grad))
    xweights = torch.tensor([
        [sum(acts[(b, k, *v)] * grads[(b, k, *v)] for v in voxels()) / (sum(acts[(b, k, *v)] for v in voxels()) + EPS)
         for k in range(K)] for b in range(B)
    ])  # fmt: skip
    torch.testing.assert_close(get_rule("xgradcam")(acts, grads), weighted_sum(acts, xweights))


def gradcampp_weights(acts, grads, relu_acts=False):
    """The paper's alpha = G² / (2 G² + sum_u(A) G³) voxel by voxel in float64 (no epsilon; alpha = 0 where G = 0),
    w_k = sum_u alpha ReLU(G), on ReLU(A) with ``relu_acts``."""
    acts = acts.clamp_min(0) if relu_acts else acts
    weights = torch.zeros(B, K, dtype=torch.float64)
    for b, k in itertools.product(range(B), range(K)):
        act_sum = sum(acts[(b, k, *v)] for v in voxels())
        for v in voxels():
            g = grads[(b, k, *v)]
            alpha = 0.0 if g == 0 else g**2 / (2 * g**2 + act_sum * g**3)
            weights[b, k] += alpha * max(g, 0)
    return weights


def test_gradcampp_equals_the_paper_formula_where_defined():
    """``1 / (2 + G sum_u A)`` is the paper's ``G² / (2G² + sum_u(A) G³)`` wherever ``G != 0``: no epsilon."""
    acts, grads = tensors()  # with a zero gradient: alpha = 0 there
    rule = get_rule("gradcampp")
    assert rule.diagnose(rule.statistics(acts, grads), len(voxels())) is None  # far from the pole
    torch.testing.assert_close(get_rule("gradcampp")(acts, grads), weighted_sum(acts, gradcampp_weights(acts, grads)))


def test_gradcampp_relu_variant_equals_the_paper_formula_on_relu_activations():
    acts, grads = tensors()
    assert (acts < 0).any()  # signed activations: the variant differs from the plain rule
    expected = weighted_sum(acts.clamp_min(0), gradcampp_weights(acts, grads, relu_acts=True))
    torch.testing.assert_close(get_rule("gradcampp_relu")(acts, grads), expected)
    torch.testing.assert_close(get_rule("gradcampp", activation="relu")(acts, grads), expected)
    assert not torch.allclose(get_rule("gradcampp")(acts, grads), expected)
    with pytest.raises(ValueError, match="sigmoid"):
        get_rule("gradcampp", activation="sigmoid")


def test_gradcampp_counts_near_singular_denominators():
    """A channel whose ``sum_u A`` puts one positive gradient's denominator ``2 + G sum_u A`` at 1e-3 (below the
    0.01 bound): the diagnosis names the share of affected channel weights; the ReLU variant is never singular."""
    acts, grads = tensors()
    target = (1e-3 - 2) / 0.7
    acts[0, 0, 0, 0, 0] += target - acts[0, 0].sum()  # sum_u A of channel 0 of item 0
    grads[0, 0] = -1.0
    grads[0, 0, 1, 1, 1] = 0.7  # the one positive gradient of that channel: 2 + 0.7 sum_u A = 1e-3
    rule = get_rule("gradcampp")
    stats = rule.statistics(acts, grads)
    message = rule.diagnose(stats, len(voxels()))
    assert message is not None and f"1 of {B * K} channel weights" in message and "gradcampp_relu" in message
    torch.testing.assert_close(stats[0][0, 0], torch.tensor(0.7 / 1e-3, dtype=torch.float64))  # alpha ReLU(G) = 700
    relu = get_rule("gradcampp_relu")
    assert relu.diagnose(relu.statistics(acts, grads), len(voxels())) is None


def test_eigencam_is_the_projection_on_the_first_principal_component():
    acts, _ = tensors()
    rule = get_rule("eigencam")
    raw = rule(acts, None)
    for b in range(B):
        samples = acts[b].flatten(1).T  # (positions, K)
        centred = samples - samples.mean(0)
        component = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        component = component if component.sum() >= 0 else -component
        torch.testing.assert_close(raw[b, 0].flatten(), centred @ component)


def test_combine_is_the_weighted_channel_sum_plus_offset():
    acts, _ = tensors()
    weights, offset = torch.randn(B, K, dtype=torch.float64), torch.tensor([0.5, -2.0], dtype=torch.float64)
    torch.testing.assert_close(CAMRule.combine(acts, weights, offset), weighted_sum(acts, weights, offset))
    torch.testing.assert_close(CAMRule.combine(acts, weights), weighted_sum(acts, weights))


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "eigencam"])
def test_statistics_add_up_over_windows(method):
    """A volume cut into two windows: the summed statistics give the whole volume's weights (sliding windows' phase
    1), and combining each window with them gives the whole volume's map."""
    acts, grads = tensors(2)
    rule = get_rule(method)
    grads = grads if rule.needs_gradients else None
    halves = [(slice(None), slice(None), slice(0, 2)), (slice(None), slice(None), slice(2, 4))]
    extra = {"activation_sum": acts.flatten(2).sum(-1)} if rule.needs_activation_sum else {}  # over the volume
    parts = [rule.statistics(acts[h], None if grads is None else grads[h], **extra) for h in halves]
    summed = [a + b for a, b in zip(*parts)]
    num_positions = len(voxels())
    for whole, total in zip(rule.statistics(acts, grads), summed):
        torch.testing.assert_close(whole, total)
    weights, offset = rule.weights(summed, num_positions)
    stitched = torch.cat([rule.combine(acts[h], weights, offset) for h in halves], dim=2)
    torch.testing.assert_close(stitched, rule(acts, grads))
