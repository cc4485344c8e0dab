# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Bad or unusual input: each refused with a message a user can act on, or handled correctly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers_reliability import assert_untouched, set_mixed_state, small_unet
from monai.networks.nets import DynUNet, SegResNet, SwinUNETR
from torch import nn

from monai_segcam import Box, SegCAM, SlidingWindowSegCAM

ALL_METHODS = ["gradcam", "hirescam", "xrescam", "gradcampp", "xgradcam", "layercam", "eigencam", "scorecam"]


def _make(engine: str, net: nn.Module, **kwargs):
    if engine == "segcam":
        return SegCAM(net, **kwargs)
    return SlidingWindowSegCAM(net, roi_size=(8, 8, 4), overlap=0.25, **kwargs)


# --- layers ---------------------------------------------------------------------------------------------------------


def test_unknown_layer_lists_close_candidates():
    """A misspelt layer name or preset: ValueError listing the closest names, the presets and list_layers()."""
    net = small_unet()
    with pytest.raises(ValueError, match=r"Unknown layer 'model\.11'.*Closest names: \[.*'model\.1'.*list_layers"):
        SegCAM(net, layers="model.11")
    with pytest.raises(ValueError, match=r"Unknown layer 'pre_haed'.*Closest names: \['pre_head'"):
        SlidingWindowSegCAM(net, roi_size=8, layers="pre_haed")


def test_selector_on_a_tensor_output_is_refused():
    """A selector on a layer whose output is a single tensor (it would index the batch): a clear TypeError."""
    net = small_unet()
    before = set_mixed_state(net)
    with pytest.raises(TypeError, match=r"outputs a Tensor, which takes no selector; use 'model\.1' without '\[0\]'"):
        SegCAM(net, layers="model.1[0]")(torch.randn(1, 1, 8, 8, 8)).map
    assert_untouched(net, before)


def test_swin_unetr_list_output_needs_a_selector():
    """SwinUNETR's ``swinViT`` returns a list of 5 feature maps: without a selector a TypeError suggesting one, an
    out-of-range selector a ValueError listing the valid ones, and ``swinViT[4]`` gives a finite map on the image
    grid; the network is left untouched every time."""
    torch.manual_seed(0)
    net = SwinUNETR(1, 3, feature_size=12, depths=(1, 1, 1, 1), window_size=4, norm_name="batch")
    image = torch.randn(1, 1, 32, 32, 32)
    before = set_mixed_state(net)
    with pytest.raises(TypeError, match=r"Layer 'swinViT' outputs a list, not a tensor.*'swinViT\[0\]'"):
        SegCAM(net, layers="swinViT")(image).map
    assert_untouched(net, before)
    with pytest.raises(ValueError, match=r"Selector \[7\] .* list of 5 elements \(valid selectors: 0\.\.4\)"):
        SegCAM(net, layers="swinViT[7]")(image).map
    assert_untouched(net, before)
    maps = SegCAM(net, layers=["swinViT[4]", "encoder10"], method="gradcam", relu=False)(image, classes=1, region="all")
    assert_untouched(net, before)
    for value in maps.values():
        assert value.shape == (1, 1, 32, 32, 32) and torch.isfinite(value).all() and value.abs().max() > 0


# --- classes, regions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_region_mask_shape_mismatch(engine):
    """A region mask on another grid, of another batch size or channel count: ValueError naming the shapes."""
    cam = _make(engine, small_unet())
    image = torch.randn(2, 1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"Region mask shape \(2, 1, 8, 8, 4\) does not match the output"):
        cam(image, region=torch.ones(2, 1, 8, 8, 4))
    with pytest.raises(ValueError, match="Region mask batch size 3 does not match the image batch 2"):
        cam(image, region=torch.ones(3, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="Region mask has 2 channels; expected 1, one per requested class"):
        cam(image, classes=[0, 1, 2], region=torch.ones(2, 2, 8, 8, 8))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_empty_region_gives_exact_zeros_and_a_warning_segcam(method):
    """An empty region, for every method: a warning naming (batch item, class), an exactly-zero map, never NaN; the
    other batch item (non-empty region) still gets its map."""
    cam = SegCAM(small_unet(), method=method, scorecam_batch_size=4)
    mask = torch.zeros(2, 1, 8, 8, 8)
    mask[1, :, 2:6, 2:6, 2:6] = 1
    with pytest.warns(UserWarning, match=r"Empty region for \(batch item, class\) \[\(0, 1\)\]"):
        maps = cam(torch.randn(2, 1, 8, 8, 8), classes=1, region=mask).map
    assert torch.isfinite(maps).all()
    assert torch.equal(maps[0], torch.zeros_like(maps[0]))
    assert maps[1].abs().sum() > 0


@pytest.mark.parametrize("method", ALL_METHODS)
def test_empty_region_gives_exact_zeros_and_a_warning_sliding_window(method):
    """The same for sliding windows, with the empty region named as a string and as a mask."""
    cam = SlidingWindowSegCAM(small_unet(), roi_size=(8, 8, 4), overlap=0.25, method=method, mode="gaussian")
    image = torch.randn(2, 1, 8, 8, 8)
    for region in ["empty", torch.zeros(1, 1, 8, 8, 8)]:
        with pytest.warns(UserWarning, match="Empty region"):
            maps = cam(image, classes=[0, 2], region=region).map
        assert maps.shape == (2, 2, 8, 8, 8)
        assert torch.equal(maps.as_tensor(), torch.zeros_like(maps.as_tensor()))


# --- network outputs and wrappers -----------------------------------------------------------------------------------


class TupleOutput(nn.Module):
    """A user's wrapper returning ``(logits, aux)``; it stores its network as ``self.module`` (like DDP does). With
    ``twice`` the auxiliary output is a second full-resolution map, so the logits are ambiguous."""

    def __init__(self, net: nn.Module, twice: bool = False) -> None:
        super().__init__()
        self.module = net
        self.twice = twice

    def forward(self, x):
        logits = self.module(x)
        return logits, (2 * logits if self.twice else logits.mean())


@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_tuple_output_needs_output_selector(engine):
    """A network returning a tuple with two full-resolution maps: TypeError naming both and asking for
    ``output_selector``; with ``output_selector=0`` the maps equal the bare network's. With one full-resolution map
    (the other a scalar) that map is picked without a selector. The wrapper's own layer name ``module.model.1``
    resolves (it is not a DDP prefix)."""
    net = small_unet()
    wrapper = TupleOutput(net, twice=True)
    image = torch.randn(1, 1, 8, 8, 8)
    before = set_mixed_state(wrapper)
    with pytest.raises(
        TypeError,
        match=r"returned a tuple .*2 of them .*\[0\] \(1, 3, 8, 8, [48]\), \[1\] \(1, 3, 8, 8, [48]\); choose the "
        r"segmentation logits with `output_selector=`",
    ):
        _make(engine, wrapper, layers="module.model.1")(image, region="all")
    assert_untouched(wrapper, before)
    maps = _make(engine, wrapper, layers="module.model.1", output_selector=0)(image, classes=[1, 2]).map
    expected = _make(engine, net, layers="model.1")(image, classes=[1, 2]).map
    torch.testing.assert_close(maps, expected)
    assert_untouched(wrapper, before)
    single = TupleOutput(net)
    torch.testing.assert_close(_make(engine, single, layers="module.model.1")(image, classes=[1, 2]).map, expected)



@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_dynunet_deep_supervision_in_train_mode(engine):
    """DynUNet with deep supervision returns stacked heads in train mode; CAMs run the network in eval mode, so a
    network left in train mode gives the same maps as in eval mode, and stays in train mode."""
    net = DynUNet(3, 1, 3, [3, 3, 3], [1, 2, 2], [2, 2], deep_supervision=True, deep_supr_num=1)
    image = torch.randn(1, 1, 8, 8, 8)
    assert net.train()(image).ndim == 6  # (B, heads, C, *spatial) in train mode
    expected = _make(engine, net.eval(), method="gradcam")(image, classes=[1, 2]).map
    net.train()
    maps = _make(engine, net, method="gradcam")(image, classes=[1, 2]).map
    assert net.training and all(m.training for m in net.modules())
    torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_inference_mode_is_supported(engine):
    """Called under ``torch.inference_mode()`` (common in inference scripts) the CAM equals the one computed outside."""
    net = SegResNet(3, init_filters=8, in_channels=1, out_channels=3, blocks_down=(1, 1), blocks_up=(1,))
    image = torch.randn(1, 1, 8, 8, 8)
    expected = _make(engine, net, method="xgradcam")(image, classes=[1, 2]).map
    with torch.inference_mode():
        maps = _make(engine, net, method="xgradcam")(image.clone(), classes=[1, 2]).map
    torch.testing.assert_close(maps.as_tensor(), expected.as_tensor())


# --- geometry and batches -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,mode", [("hirescam", "constant"), ("gradcam", "gaussian"), ("eigencam", "constant")])
def test_image_smaller_than_the_window(method, mode):
    """An image smaller than the window is padded like MONAI pads it: the map has the image's shape and equals the
    whole-volume SegCAM of the *padded* image, cropped back (with the region padded by zeros). It is not the SegCAM of
    the unpadded image: the network sees the padding."""
    net = small_unet()
    image = torch.randn(1, 1, 6, 8, 5)
    region = torch.zeros(1, 1, 6, 8, 5)
    region[..., 1:5, 2:7, 1:4] = 1
    maps = SlidingWindowSegCAM(net, roi_size=(8, 8, 8), method=method, mode=mode)(image, classes=[1, 2], region=region).map
    assert maps.shape == (1, 2, 6, 8, 5)
    pad = (1, 2, 0, 0, 1, 1)  # MONAI's symmetric padding (last dim first): 5 -> 8, 8 -> 8, 6 -> 8
    padded = SegCAM(net, method=method)(F.pad(image, pad), classes=[1, 2], region=F.pad(region, pad)).map
    torch.testing.assert_close(maps.as_tensor(), padded.as_tensor()[..., 1:7, 0:8, 1:6])
    assert maps.abs().sum() > 0


@pytest.mark.parametrize(
    "engine, method",
    [
        (engine, method)
        for engine in ("segcam", "sliding_window")
        for method in ("hirescam", "gradcam", "gradcampp", "eigencam", "scorecam")
    ],
)
def test_batch_items_are_independent(engine, method):
    """A batch of two different images with a different region each equals the two single-item calls."""
    cam = _make(engine, small_unet(), method=method, layers=["model.0", "pre_head"])
    images = torch.randn(2, 1, 8, 8, 8)
    images[1] = images[1] * 3 + 1
    regions = torch.zeros(2, 1, 8, 8, 8)
    regions[0, :, :4, :4, :4] = 1
    regions[1, :, 3:, 2:6, 5:] = 1
    batched = cam(images, classes=[0, 2], region=regions)
    for b in range(2):
        single = cam(images[b : b + 1], classes=[0, 2], region=regions[b : b + 1])
        for key in batched:
            torch.testing.assert_close(batched[key][b : b + 1], single[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["hirescam", "xrescam", "gradcam", "eigencam"])
def test_2d_networks_are_supported(method):
    """2D networks (UNet, spatial_dims=2): SegCAM and SlidingWindowSegCAM give 2D maps on the image grid, and one
    window covering the image equals the whole-image SegCAM."""
    net = small_unet(spatial_dims=2)
    image = torch.randn(2, 1, 16, 12)
    whole = SegCAM(net, method=method)(image, classes=[1, 2], region=Box((2, 2), (12, 10))).map
    assert whole.shape == (2, 2, 16, 12) and torch.isfinite(whole).all() and whole.abs().sum() > 0
    one_window = SlidingWindowSegCAM(net, roi_size=(16, 12), method=method)
    one_window = one_window(image, classes=[1, 2], region=Box((2, 2), (12, 10))).map
    torch.testing.assert_close(one_window.as_tensor(), whole.as_tensor(), rtol=1e-4, atol=1e-5)
    tiled = SlidingWindowSegCAM(net, roi_size=(8, 8), overlap=0.5, method=method)(image, classes=1).map
    assert tiled.shape == (2, 1, 16, 12) and torch.isfinite(tiled).all()
