# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Input attributions (gradient, input × gradient, SmoothGrad, Integrated Gradients) against autograd through MONAI's
own ``sliding_window_inference`` of the stitched region score, and against captum's ``IntegratedGradients``."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam import SegCAM, SlidingWindowSegCAM
from monai_segcam.cam import Box, quadrature_rule
from monai_segcam.utils.baselines import make_baseline

ROI, OVERLAP = (16, 16, 12), 0.5


def unet(in_channels: int = 2, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(3, in_channels, 3, (4, 8, 16), (2, 2), num_res_units=1).double().eval()


def ensemble(nets, flips):
    """The deployed prediction of one window: mean over members and flips of the flipped-back outputs."""

    def predict(window):
        outs = [torch.flip(net(torch.flip(window, [2 + a for a in f])), [2 + a for a in f]) for net in nets for f in flips]
        return torch.stack(outs).mean(0)

    return predict


def stitched_score(predictor, mask, cls, mode="constant", target="logits", contrast=None, roi=ROI, **kwargs):
    """``x -> S(x)`` per batch item: the region score of MONAI's stitched prediction, the region ``mask`` fixed."""

    def score(x):
        y = sliding_window_inference(x, roi, 1, predictor, OVERLAP, mode, **kwargs)
        y = torch.softmax(y, 1) if target == "probabilities" else y
        t = y[:, cls : cls + 1] - (y[:, contrast : contrast + 1] if contrast is not None else 0)
        return (t * mask).flatten(1).sum(1)

    return score


def region_mask(predictor, x, cls, mode="constant", **kwargs):
    with torch.no_grad():
        pred = sliding_window_inference(x, ROI, 1, predictor, OVERLAP, mode, **kwargs)
    return (pred.argmax(1, keepdim=True) == cls).double()


def autograd_gradient(score, x):
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(leaf).sum(), leaf)
    return grad


def close(got, expected, rtol=1e-8):
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(got.as_tensor() if hasattr(got, "as_tensor") else got, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_gradient_and_input_x_gradient_equal_autograd_through_monai_sliding_window(mode):
    net = unet()
    x = torch.randn(1, 2, 28, 24, 20, dtype=torch.float64)
    mask = region_mask(net, x, 1, mode)
    grad = autograd_gradient(stitched_score(net, mask, 1, mode), x)
    for method, expected in (("gradient", grad), ("input_x_gradient", x * grad)):
        result = SlidingWindowSegCAM(net, ROI, method=method, relu=False, overlap=OVERLAP, mode=mode)(x, classes=1)
        assert list(result) == ["input"] and result.method == method
        close(result["input"][:, 0], expected.sum(1))
        close(result.channels["input"][:, 0], expected)  # per input channel (modality)


@pytest.mark.parametrize("padding_mode", ["constant", "replicate"])
def test_gradient_is_pulled_back_through_monai_padding(padding_mode):
    """An image smaller than the window is padded; with replicate padding the padded voxels depend on the image."""
    net = unet()
    x = torch.randn(1, 2, 12, 14, 10, dtype=torch.float64)
    kwargs = {"padding_mode": padding_mode}
    mask = region_mask(net, x, 2, **kwargs)
    grad = autograd_gradient(stitched_score(net, mask, 2, **kwargs), x)
    result = SlidingWindowSegCAM(net, ROI, method="input_x_gradient", relu=False, overlap=OVERLAP, **kwargs)(x, classes=2)
    close(result.channels["input"][:, 0], x * grad)


def test_whole_volume_gradient_of_several_classes_equals_autograd():
    net = unet()
    x = torch.randn(2, 2, 16, 16, 12, dtype=torch.float64)
    with torch.no_grad():
        pred = net(x).argmax(1, keepdim=True)
    result = SegCAM(net, method="gradient", relu=False)(x, classes=[0, 2])
    for i, c in enumerate((0, 2)):
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((net(leaf)[:, c : c + 1] * (pred == c)).sum(), leaf)
        close(result["input"][:, i], grad.sum(1))


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_ensemble_with_flips_equals_autograd_through_the_stitched_prediction(mode):
    nets, flips = [unet(seed=0), unet(seed=1)], [(), (0,), (0, 2)]
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    predictor = ensemble(nets, flips)
    mask = region_mask(predictor, x, 1, mode)
    grad = autograd_gradient(stitched_score(predictor, mask, 1, mode), x)
    cam = SlidingWindowSegCAM(nets, ROI, method="input_x_gradient", relu=False, overlap=OVERLAP, mode=mode, flips=flips)
    close(cam(x, classes=1)["input"][:, 0], (x * grad).sum(1))


@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
@pytest.mark.parametrize("baseline", [0.0, "mean", "blur"])
def test_integrated_gradients_equal_captum_on_the_stitched_score(quadrature, baseline):
    net = unet()
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    mask = region_mask(net, x, 1, "gaussian")
    score = stitched_score(net, mask, 1, "gaussian")
    base = make_baseline(x, baseline, 2.0)
    ig = IntegratedGradients(score).attribute(x, base, n_steps=6, method=quadrature)
    cam = SlidingWindowSegCAM(
        net, ROI, method="integrated_gradients", relu=False, overlap=OVERLAP, mode="gaussian", n_steps=6,
        quadrature=quadrature, baseline=baseline, blur_sigma=2.0,
    )  # fmt: skip
    result = cam(x, classes=1)
    rtol = 1e-8 if quadrature == "gausslegendre" else 1e-6  # captum's Riemann points are float32 (torch.linspace)
    close(result.channels["input"][:, 0], ig, rtol)


def test_trapezoid_rule_is_the_true_trapezoid_and_captum_weights_sum_to_one_minus_one_over_n():
    points, weights = quadrature_rule("riemann_trapezoid", 5)
    assert points == [0.0, 0.25, 0.5, 0.75, 1.0] and sum(weights) == pytest.approx(1.0)
    net = unet()
    x = torch.randn(1, 2, 16, 16, 12, dtype=torch.float64)
    mask = region_mask(net, x, 1)
    ig = IntegratedGradients(stitched_score(net, mask, 1)).attribute(x, x * 0, n_steps=5, method="riemann_trapezoid")
    cam = SlidingWindowSegCAM(net, ROI, method="integrated_gradients", relu=False, overlap=OVERLAP, n_steps=5,
                              quadrature="riemann_trapezoid")  # fmt: skip
    close(cam(x, classes=1).channels["input"][:, 0] * (1 - 1 / 5), ig, 1e-6)


def test_integrated_gradients_are_complete_at_64_steps():
    """(Batch norm in eval mode: instance norm makes the path's start, ``IN(a x)`` for ``a -> 0``, a near jump.)"""
    torch.manual_seed(0)
    net = UNet(3, 2, 3, (4, 8, 16), (2, 2), num_res_units=1, norm="batch").double().eval()
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    mask = region_mask(net, x, 1)
    score = stitched_score(net, mask, 1)
    for baseline in (0.0, "blur"):
        cam = SlidingWindowSegCAM(net, ROI, method="integrated_gradients", relu=False, overlap=OVERLAP, n_steps=64,
                                  baseline=baseline)  # fmt: skip
        total = float(cam(x, classes=1)["input"].sum())  # the region from the clean prediction: the mask's
        with torch.no_grad():
            expected = float(score(x) - score(make_baseline(x, baseline, 5.0)))
        assert abs(expected) > 1e-3
        assert total == pytest.approx(expected, rel=0.01)


def test_integrated_gradients_of_probabilities_equal_captum():
    """Each path point's cotangent comes from its own stitched softmax."""
    net = unet()
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    mask = region_mask(net, x, 1)
    ig = IntegratedGradients(stitched_score(net, mask, 1, target="probabilities")).attribute(x, x * 0, n_steps=4)
    cam = SlidingWindowSegCAM(net, ROI, method="integrated_gradients", target="probabilities", relu=False,
                              overlap=OVERLAP, n_steps=4)  # fmt: skip
    close(cam(x, classes=1).channels["input"][:, 0], ig)


def test_smoothgrad_without_noise_is_the_gradient_and_a_seed_fixes_it():
    net = unet()
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    kwargs = {"relu": False, "overlap": OVERLAP}
    gradient = SlidingWindowSegCAM(net, ROI, method="gradient", **kwargs)(x, classes=1)["input"]
    still = SlidingWindowSegCAM(net, ROI, method="smoothgrad", n_samples=3, noise_level=0.0, **kwargs)(x, classes=1)
    close(still["input"], gradient.as_tensor())
    noisy = [SlidingWindowSegCAM(net, ROI, method="smoothgrad", n_samples=3, seed=s, **kwargs)(x, classes=1, pred=net(x))
             for s in (7, 7, 8)]  # fmt: skip
    torch.testing.assert_close(noisy[0]["input"], noisy[1]["input"], rtol=0, atol=0)
    assert not torch.allclose(noisy[0]["input"], noisy[2]["input"])
    assert not torch.allclose(noisy[0]["input"], gradient)


def test_smoothgrad_of_a_linear_network_is_its_gradient_for_any_noise():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 1).double().eval()
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    kwargs = {"relu": False, "overlap": OVERLAP, "mode": "gaussian"}
    pred = net(x).detach()
    gradient = SlidingWindowSegCAM(net, ROI, method="gradient", **kwargs)(x, classes=1, pred=pred)["input"]
    smooth = SlidingWindowSegCAM(net, ROI, method="smoothgrad", noise_level=0.5, n_samples=4, **kwargs)
    close(smooth(x, classes=1, pred=pred)["input"], gradient.as_tensor())


def test_windows_outside_the_region_are_skipped_and_an_empty_region_gives_zeros():
    calls = []
    net = unet()
    net.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    x = torch.randn(1, 2, 40, 16, 12, dtype=torch.float64)
    cam = SlidingWindowSegCAM(net, ROI, method="integrated_gradients", n_steps=2, overlap=0.0, relu=False)
    result = cam(x, classes=1, region=Box((0, 0, 0), (4, 4, 4)))
    assert sum(calls) == 2  # one window of three touches the box: one forward per path point
    assert result["input"][..., 16:, :, :].abs().max() == 0 and result["input"].abs().max() > 0
    with pytest.warns(UserWarning, match="Empty region"):
        empty = cam(x, classes=1, region=torch.zeros(1, 1, 40, 16, 12))
    assert empty["input"].abs().max() == 0 and not empty["input"].isnan().any()


def test_bad_options_are_rejected():
    net = unet()
    with pytest.raises(ValueError, match=r"quadrature|Unsupported"):
        SegCAM(net, method="integrated_gradients", quadrature="simpson")
    with pytest.raises(ValueError, match="n_steps"):
        SegCAM(net, method="integrated_gradients", quadrature="riemann_trapezoid", n_steps=1)
    with pytest.raises(ValueError, match="n_samples"):
        SegCAM(net, method="smoothgrad", n_samples=0)
    with pytest.raises(ValueError, match="noise_level"):
        SegCAM(net, method="smoothgrad", noise_level=-1.0)
    with pytest.raises(ValueError, match="median"):
        SegCAM(net, method="integrated_gradients", baseline="median")


def test_contrast_equals_autograd_with_the_difference_cotangent_for_a_cam_an_input_attribution_and_occlusion():
    """``contrast=c2`` explains ``S = sum_M (y_c - y_c2)``: the cotangent ``T_c - T_c2`` on the region of ``c``."""
    from monai_segcam.perturbation import SegOcclusion

    net = unet()
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    mask = region_mask(net, x, 1, "gaussian")
    kwargs = {"relu": False, "overlap": OVERLAP, "mode": "gaussian"}
    # an input attribution
    grad = autograd_gradient(stitched_score(net, mask, 1, "gaussian", contrast=2), x)
    result = SlidingWindowSegCAM(net, ROI, method="input_x_gradient", **kwargs)(x, classes=1, contrast=2)
    close(result["input"][:, 0], (x * grad).sum(1))
    plain = SlidingWindowSegCAM(net, ROI, method="input_x_gradient", **kwargs)(x, classes=1)
    assert not torch.allclose(plain["input"], result["input"])
    # a CAM: HiResCAM of the network input is input x gradient, with any contrast
    hires = SlidingWindowSegCAM(net, ROI, layers="input", method="hirescam", **kwargs)(x, classes=1, contrast=2)
    close(hires["input"][:, 0], (x * grad).sum(1))
    # a global-weight CAM of a hidden layer is linear in the cotangent: T_1 - T_2 on the region of class 1
    cam = SlidingWindowSegCAM(net, ROI, layers="model.1.submodule.0", method="gradcam", **kwargs)
    got = cam(x, classes=1, contrast=2).map
    own = SlidingWindowSegCAM(net, ROI, layers="model.1.submodule.0", method="gradcam", **kwargs)(x, classes=1).map
    minus = SlidingWindowSegCAM(net, ROI, layers="model.1.submodule.0", method="gradcam", **kwargs)
    other = minus(x, classes=2, region=mask).map
    close(got, own.as_tensor() - other.as_tensor(), 1e-7)
    # occlusion: the drop of the contrast score of every occluded image
    occlusion = SegOcclusion(net, ROI, mask_size=8, overlap=OVERLAP, mode="gaussian", relu=False)
    drops = occlusion(x, classes=1, region=mask, contrast=2)["input"]
    score = stitched_score(net, mask, 1, "gaussian", contrast=2)
    with torch.no_grad():
        clean = score(x)
        for box in ((slice(0, 8), slice(0, 8), slice(0, 8)), (slice(16, 24), slice(0, 8), slice(8, 16))):  # covered once
            occluded = x.clone()
            occluded[(..., *box)] = 0
            expected = clean - score(occluded)
            torch.testing.assert_close(drops[(0, 0, *box)], expected.expand(8, 8, 8), rtol=1e-8, atol=1e-10)


def test_contrast_with_an_explained_class_or_out_of_range_is_rejected():
    net = unet()
    x = torch.randn(1, 2, 16, 16, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="also explained"):
        SegCAM(net, method="gradient")(x, classes=[1, 2], contrast=2)
    with pytest.raises(ValueError, match="out of range"):
        SegCAM(net, method="hirescam")(x, classes=1, contrast=5)


@pytest.mark.parametrize("target", ["logits", "probabilities"])
def test_scorecam_contrast_scores_the_difference_and_eigencam_takes_none(target):
    """Score-CAM's masked scores of ``t_1 - t_2``: its channel weights are differences, so the map equals a Score-CAM
    whose network outputs ``t_1 - t_2`` in channel 1 (logits: exactly that network's)."""
    net = unet()
    x = torch.randn(1, 2, 24, 20, 16, dtype=torch.float64)
    mask = region_mask(net, x, 1)
    kwargs = {"layers": "model.1.submodule.0", "method": "scorecam", "target": target, "overlap": OVERLAP}
    got = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=1, region=mask, contrast=2).map
    plain = SlidingWindowSegCAM(net, ROI, **kwargs)(x, classes=1, region=mask).map
    assert not torch.allclose(got, plain)
    if target == "logits":

        class Difference(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, window):
                y = self.net(window)
                return torch.cat([y[:, :1], y[:, 1:2] - y[:, 2:3], y[:, 2:3]], 1)

        kwargs["layers"] = "net.model.1.submodule.0"
        expected = SlidingWindowSegCAM(Difference(), ROI, **kwargs)(x, classes=1, region=mask).map
        close(got, expected.as_tensor())
    with pytest.raises(ValueError, match="class-agnostic"):
        SlidingWindowSegCAM(net, ROI, layers="model.1.submodule.0", method="eigencam")(x, classes=1, contrast=2)
