# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The documented extension points run: a custom rule, a custom region, a new perturbation method, a new explainer
(the registered method of register_method's docstring runs in test_methods.py)."""

from __future__ import annotations

import torch
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.networks.nets import UNet
from monai.utils import ensure_tuple

from monai_segcam import SegCAM, SlidingWindowSegCAM
from monai_segcam.cam import CAMRule, Explainer, Region, WindowedEngine, WindowSettings, region_weights
from monai_segcam.perturbation.base import StitchedExplainer


def unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1).eval()


class PositiveGradCAM(CAMRule):  # the CAMRule docstring's example
    def statistics(self, acts, grads):
        return (grads.clamp_min(0).flatten(2).sum(-1),)

    def weights(self, stats, num_positions):
        return stats[0] / num_positions, None


class Sphere(Region):  # the Region docstring's example
    needs_prediction = False

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in spatial_shape], indexing="ij"))
        inside = ((grid - torch.tensor([8, 8, 6]).view(-1, 1, 1, 1)) ** 2).sum(0) <= 4**2
        return inside.expand(batch_size, len(classes), *spatial_shape)


def test_custom_rule_in_both_engines_equals_gradcam_with_positive_gradients():
    net, x = unet(), torch.randn(1, 1, 16, 16, 12)
    custom = SegCAM(net, method=PositiveGradCAM(), relu=False)(x, classes=1).map
    assert custom.abs().sum() > 0
    one_window = SlidingWindowSegCAM(net, (16, 16, 12), method=PositiveGradCAM(), relu=False)(x, classes=1).map
    torch.testing.assert_close(one_window, custom)
    assert SegCAM(net, method=PositiveGradCAM())(x, classes=1).method == "PositiveGradCAM"


def test_custom_region_gives_a_map_inside_the_sphere_only_for_a_1x1_model():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 1), torch.nn.Conv3d(4, 3, 1)).eval()
    x = torch.rand(1, 1, 16, 16, 12) + 0.5
    result = SegCAM(net, layers="0", method="hirescam", relu=False)(x, classes=2, region=Sphere())
    inside = Sphere().weights(None, [2], (16, 16, 12), 1)
    assert torch.equal(result.region.bool(), inside)
    assert torch.all(result.map[~inside[:, :1].expand_as(result.map)] == 0)
    assert result.map[inside[:, :1].expand_as(result.map)].abs().sum() > 0


def test_new_perturbation_method_on_the_stitched_machinery_scores_the_stitched_prediction():
    """The StitchedExplainer docstring's example: S(x) of the stitched prediction, checked against MONAI."""
    net = unet().double()
    x = torch.randn(1, 1, 20, 16, 12, dtype=torch.float64)

    class MyPerturbation(StitchedExplainer[torch.Tensor]):
        def _explain(self, state):
            return state.scorer.region_score()

    scores = MyPerturbation(net, roi_size=(16, 16, 12), overlap=0.5)(x, classes=[1, 2], region="all")
    with torch.no_grad():
        stitched = sliding_window_inference(x, (16, 16, 12), 1, net, 0.5)
    torch.testing.assert_close(scores, stitched[:, [1, 2]].flatten(2).sum(-1))


def test_new_explainer_runs_outside_inference_mode():
    """The Explainer docstring's example, called inside torch.inference_mode like a MONAI evaluator."""
    net = unet()
    x = torch.randn(1, 1, 16, 16, 12)

    class RegionScore(Explainer[torch.Tensor]):
        def __init__(self, net):
            self.net = net

        def _call(self, image, classes, region, pred, label):
            assert not torch.is_inference_mode_enabled()
            logits = self.net(image)
            weights = region_weights(region, logits, ensure_tuple(classes), image.shape[2:], len(image))
            return (weights * logits[:, list(ensure_tuple(classes))]).flatten(2).sum(-1)

    with torch.inference_mode():
        score = RegionScore(net)(x, classes=1, region="all")
    with torch.no_grad():
        torch.testing.assert_close(score, net(x)[:, 1:2].sum((2, 3, 4)))


def test_windowed_engine_example_reads_the_inferer_settings():
    """The WindowedEngine docstring's example."""

    class MyExplainer(WindowedEngine):
        def __init__(self, network, roi_size=None, **window_kwargs):
            self.network, self.window = network, WindowSettings(roi_size, **window_kwargs)

    inferer = SlidingWindowInferer((8, 8, 8), overlap=0.5)
    explainer = MyExplainer.from_inferer(inferer, unet())
    assert isinstance(explainer, MyExplainer) and explainer.overlap == 0.5
    assert len(explainer.grid((16, 8, 8)).slices) == 3
