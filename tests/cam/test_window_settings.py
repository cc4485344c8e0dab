# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""WindowSettings: the one window configuration of the CAM engines and the perturbation explainers (grid, devices,
validation, from_inferer), and the stitched prediction of a custom window grid."""

from __future__ import annotations

import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam import SegCAM, SlidingWindowSegCAM
from monai_segcam.cam.windows import WindowGrid, WindowSettings, inferer_window_settings
from monai_segcam.perturbation import ChannelAttribution, SegOcclusion
from monai_segcam.perturbation.base import StitchedExplainer


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 2, (4, 8), (2,), num_res_units=0).double().eval()


def test_from_inferer_gives_every_engine_the_same_settings():
    net = tiny_unet()
    inferer = SlidingWindowInferer((8, 8, 8), sw_batch_size=3, overlap=0.5, mode="gaussian", sigma_scale=0.2,
                                   padding_mode="reflect", cval=1.5, cpu_thresh=10**6)  # fmt: skip
    expected = inferer_window_settings(inferer)
    assert isinstance(expected, WindowSettings)
    assert (expected.roi_size, expected.sw_batch_size, expected.overlap) == ((8, 8, 8), 3, 0.5)
    assert (expected.mode, expected.sigma_scale, expected.padding_mode, expected.cval) == ("gaussian", 0.2, "reflect", 1.5)
    engines = [
        SlidingWindowSegCAM.from_inferer(inferer, net, layers="bottleneck"),
        SegOcclusion.from_inferer(inferer, net, mask_size=4),
        ChannelAttribution.from_inferer(inferer, net, steps=2),
    ]
    for engine in engines:
        assert engine.window == expected
        assert engine.roi_size == (8, 8, 8) and engine.overlap == 0.5 and engine.cpu_thresh == 10**6
    overridden = SlidingWindowSegCAM.from_inferer(inferer, net, layers="bottleneck", overlap=0.25, sw_batch_size=1)
    assert overridden.overlap == 0.25 and overridden.sw_batch_size == 1 and overridden.mode == "gaussian"
    overridden.sw_batch_size = 2  # attributes write through to the settings
    assert overridden.window.sw_batch_size == 2


def test_grid_is_monai_grid_or_one_window_or_the_custom_scheme():
    settings = WindowSettings(roi_size=(8, 8, 8), overlap=0.5, mode="gaussian")
    grid = settings.grid((16, 8, 4))
    assert grid.slices == [(slice(s, s + 8), slice(0, 8), slice(0, 8)) for s in (0, 4, 8)]  # interval 8 * 0.5
    assert grid.pad == [2, 2, 0, 0, 0, 0] and grid.padded_shape == (16, 8, 8)
    torch.testing.assert_close(grid.importance[0, 0], compute_importance_map((8, 8, 8), "gaussian", 0.125))
    expected = WindowGrid.from_monai((16, 8, 4), (8, 8, 8), 0.5, mode="gaussian")
    assert expected.slices == grid.slices and expected.pad == grid.pad
    whole = WindowSettings().grid((16, 8, 4))  # roi_size None: one window, the image
    assert whole.slices == [(slice(0, 16), slice(0, 8), slice(0, 4))] and not whole.padded
    custom = WindowSettings(roi_size=(8, 8, 8), window_grid=lambda shape: expected)
    assert custom.grid((99, 99, 99)) is expected


def test_devices_default_to_the_network_then_the_image():
    image = torch.zeros(1, 1, 4, 4, 4)
    net = torch.nn.Conv3d(1, 1, 1).to("meta")  # parameters elsewhere than the image
    assert WindowSettings().devices(image, net) == (torch.device("meta"), torch.device("cpu"))
    assert WindowSettings().devices(image, torch.nn.Identity()) == (torch.device("cpu"), torch.device("cpu"))
    assert WindowSettings(sw_device="meta", device="meta").devices(image) == (torch.device("meta"),) * 2
    assert WindowSettings(device="meta", cpu_thresh=63).devices(image)[1] == torch.device("cpu")
    assert WindowSettings(device="meta", cpu_thresh=64).devices(image)[1] == torch.device("meta")


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="sw_batch_size"):
        WindowSettings(sw_batch_size=0)
    with pytest.raises(ValueError, match="overlap"):
        WindowSettings(overlap=(0.5, 1.0, 0.0))
    with pytest.raises(ValueError, match="gaussian"):
        WindowSettings(mode="gauss")
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowSegCAM(tiny_unet(), 8, layers="bottleneck", overlap=-0.1)
    with pytest.raises(ValueError, match="sw_batch_size"):
        StitchedExplainer(tiny_unet(), 8, sw_batch_size=0)


def _manual_stitch(net, x, grid):
    """sum_w importance * f_w / count on the padded grid, by hand."""
    padded = grid.pad_image(x)
    total = torch.zeros((x.shape[0], 2, *grid.padded_shape), dtype=x.dtype)
    count = torch.zeros((1, 1, *grid.padded_shape), dtype=x.dtype)
    with torch.no_grad():
        for window in grid.slices:
            total[(..., *window)] += net(padded[(..., *window)]) * grid.importance
            count[(..., *window)] += grid.importance
    return (total / count)[grid.crop]


def test_stitched_prediction_honours_a_custom_window_grid():
    net = tiny_unet()
    x = torch.randn(2, 1, 16, 8, 8, dtype=torch.float64)
    importance = torch.rand(1, 1, 8, 8, 8, dtype=torch.float64) + 0.5
    slices = [(slice(s, s + 8), slice(0, 8), slice(0, 8)) for s in (0, 4, 8)]  # MONAI's overlap 0.25: 0, 6, 8

    def scheme(shape):
        return WindowGrid(tuple(shape), (8, 8, 8), [0] * 6, slices, importance)

    for engine in (StitchedExplainer(net, 8, window_grid=scheme), SegOcclusion(net, 8, window_grid=scheme)):
        predicted = engine.predict(x)
        torch.testing.assert_close(predicted, _manual_stitch(net, x, scheme(x.shape[2:])))
        monai = sliding_window_inference(x, 8, 1, net, 0.25)
        assert not torch.allclose(predicted, monai)
    cam_engine = SlidingWindowSegCAM(net, 8, layers="bottleneck", window_grid=scheme)
    torch.testing.assert_close(cam_engine.predict(x), _manual_stitch(net, x, scheme(x.shape[2:])))


def test_stitched_prediction_without_a_custom_grid_is_monai():
    net = tiny_unet()
    x = torch.randn(1, 1, 13, 9, 6, dtype=torch.float64)
    engine = StitchedExplainer(net, (8, 8, 8), sw_batch_size=2, overlap=0.5, mode="gaussian", padding_mode="reflect")
    expected = sliding_window_inference(x, (8, 8, 8), 2, net, 0.5, "gaussian", padding_mode="reflect")
    torch.testing.assert_close(engine.predict(x), expected)
    with torch.no_grad():
        torch.testing.assert_close(StitchedExplainer(net).predict(x[..., :8, :8, :4]), net(x[..., :8, :8, :4]))
    assert SegCAM(net, layers="bottleneck").roi_size == -1  # the one-window engine
