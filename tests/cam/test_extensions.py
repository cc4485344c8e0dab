# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The documented extension points run: a custom rule, a registered method, a custom region."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from monai_segcam import SegCAM, SlidingWindowSegCAM
from monai_segcam.cam import CAMRule, Region, get_rule, method_names, register_method


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


def test_registered_method_is_a_name_everywhere():
    @register_method("test_poshirescam")
    class PositiveHiResCAM(CAMRule):
        local = True

        def local_map(self, acts, grads):
            return (grads.clamp_min(0) * acts.clamp_min(0)).sum(1, keepdim=True)

    assert "test_poshirescam" in method_names()
    assert isinstance(get_rule("test_poshirescam"), PositiveHiResCAM)
    result = SegCAM(unet(), method="test_poshirescam")(torch.randn(1, 1, 16, 16, 12), classes=1)
    assert result.method == "test_poshirescam" and result.map.min() >= 0
    from monai_segcam.cli.main import build_parser

    args = build_parser().parse_args(["explain", "x.nii.gz", "--bundle", "b", "--output", "o", "--method", "test_poshirescam"])
    assert args.method == ["test_poshirescam"]
    with pytest.raises(ValueError, match="already registered"):
        register_method("hirescam")(PositiveHiResCAM)


def test_unknown_method_lists_close_names():
    with pytest.raises(ValueError, match=r"Unknown CAM method 'hirescm'. Did you mean \['hirescam'"):
        get_rule("hirescm")


def test_custom_region_gives_a_map_inside_the_sphere_only_for_a_1x1_model():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 1), torch.nn.Conv3d(4, 3, 1)).eval()
    x = torch.rand(1, 1, 16, 16, 12) + 0.5
    result = SegCAM(net, layers="0", method="hirescam", relu=False)(x, classes=2, region=Sphere())
    inside = Sphere().weights(None, [2], (16, 16, 12), 1)
    assert torch.equal(result.region.bool(), inside)
    assert torch.all(result.map[~inside[:, :1].expand_as(result.map)] == 0)
    assert result.map[inside[:, :1].expand_as(result.map)].abs().sum() > 0
