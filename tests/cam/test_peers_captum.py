# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The methods captum shares, against captum 0.9 in float64 on MONAI networks (raw maps, no ReLU): Seg-Grad-CAM is
``LayerGradCam`` and Seg-HiRes-Grad-CAM is ``LayerGradientXActivation`` summed over channels, both of the region
score ``sum_v M(v) y_c(v)`` and upsampled like the engine (trilinear, ``align_corners=False``). See docs/peers.md."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SegResNet, UNet

from monai_segcam import SegCAM, layer_presets

captum_attr = pytest.importorskip("captum.attr")

NETWORKS = {
    "unet": lambda: UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1),
    "segresnet": lambda: SegResNet(spatial_dims=3, in_channels=1, out_channels=3, init_filters=8),
}
PEERS = {"gradcam": "LayerGradCam", "hirescam": "LayerGradientXActivation"}


def captum_map(net, module, x, mask, cls, peer):
    def region_score(inputs):  # the explained score, one per batch item
        return (net(inputs)[:, cls] * mask[:, 0]).flatten(1).sum(1)

    method = getattr(captum_attr, peer)(region_score, module)
    raw = method.attribute(x)
    raw = raw if peer == "LayerGradCam" else raw.sum(1, keepdim=True)  # G ⊙ A summed over channels
    return F.interpolate(raw, size=x.shape[2:], mode="trilinear", align_corners=False)


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("method", list(PEERS))
def test_equal_to_captum_in_float64(network, method):
    torch.manual_seed(0)
    net = NETWORKS[network]().double().eval()
    x = torch.randn(1, 1, 24, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        mask = (net(x).argmax(1, keepdim=True) == 1).double()
    assert mask.any()
    modules = dict(net.named_modules())
    for role in ("bottleneck", "decoder.0"):
        layer = layer_presets(net)[role]
        ours = SegCAM(net, layers=layer, method=method, relu=False)(x, classes=1, region=mask).map.as_tensor()
        peer = captum_map(net, modules[layer], x, mask, 1, PEERS[method])
        scale = float(peer.detach().abs().max())
        assert scale > 0
        torch.testing.assert_close(ours, peer.detach(), rtol=0, atol=1e-12 * scale, msg=f"{network} {role} {method}")
