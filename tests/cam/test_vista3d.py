# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""VISTA3D's class and point prompts: CAMs against autograd references through VISTA3D's own forward, whole volume,
MONAI's ``sliding_window_inference`` and VISTA3D's ``point_based_window_inferer``; the one-pass stream against the
two-pass path; roles of each prompt kind.

The reduced VISTA3D is random and built from MONAI's classes. Tests run in float64 except the point head's
``PositionEmbeddingRandom``, which only runs in float32 (its ``forward_with_coords`` casts the clicks to float32 and
multiplies them with its buffer): it is kept in float32 after ``.double()``; its outputs (embeddings of the clicks
and of the grid, constants with respect to the image) are promoted to float64 by the operations that use them.
"""

from __future__ import annotations

import pytest
import torch
from monai.apps.vista3d import inferer as point_inferer
from monai.apps.vista3d.inferer import point_based_window_inferer
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNetDS2
from monai.networks.nets.vista3d import VISTA3D, ClassMappingClassify, PointMappingSAM

from monai_segcam.cam import discover_roles
from monai_segcam.cam.prompts import PromptedVista3D, Vista3DSegCAM, point_windows

F = 8
PRE_HEAD = {"classes": "image_encoder.up_layers_auto.3.head", "points": "image_encoder.up_layers.3.head"}


def reduced_vista3d() -> VISTA3D:
    """A small random VISTA3D (labels up to 15, 8 supported), float64 but for the point head's position embedding."""
    torch.manual_seed(0)
    encoder = SegResNetDS2(in_channels=1, blocks_down=(1, 1, 1, 1, 1), norm="instance", out_channels=F,
                           init_filters=F, dsdepth=1)  # fmt: skip
    net = VISTA3D(encoder, ClassMappingClassify(n_classes=16, feature_size=F, use_mlp=True),
                  PointMappingSAM(feature_size=F, n_classes=16, last_supported=8, max_prompt=4))  # fmt: skip
    net = net.double().eval()
    net.point_head.pe_layer.float()  # float32 only (see the module docstring)
    return net


@pytest.fixture(scope="module")
def vista() -> VISTA3D:
    return reduced_vista3d()


def _image(shape, seed=1) -> torch.Tensor:
    return torch.randn((1, 1, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference_hirescam(
    net: VISTA3D, layer: str, stitched_forward, pad: tuple[int, ...] = (0, 0, 0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """HiResCAM of each prompt's "pred" region (logit > 0) from autograd: ``stitched_forward()`` runs VISTA3D's own
    forward (whole volume or through MONAI's inferer), every call of ``layer`` is recorded with where its window lies
    (from ``patch_coords``, on the grid padded by ``pad`` voxels before each dimension, as the inferer padded it)
    and each window's ``sum_c A * dS/dA`` is added there. Returns (maps, logits)."""
    module = dict(net.named_modules())[layer]
    calls: list[torch.Tensor] = []
    windows: list = []
    def record(_module, _args, out):
        calls.append(out.detach().requires_grad_())  # dS/dA of this call, through the rest of VISTA3D's forward
        return calls[-1]

    hooks = [module.register_forward_hook(record),
             net.register_forward_pre_hook(lambda m, a, kw: windows.append(kw.get("patch_coords")),
                                           with_kwargs=True)]  # fmt: skip
    try:
        for p in net.parameters():
            p.requires_grad_(False)
        logits = stitched_forward()
    finally:
        for hook in hooks:
            hook.remove()
    logits = torch.as_tensor(logits)
    padded = [s + 2 * p for s, p in zip(logits.shape[2:], pad)]  # the tests pad evenly
    maps = logits.new_zeros((*logits.shape[:2], *padded))
    for k in range(logits.shape[1]):
        region = logits[:, k] > 0  # NaN (outside the point windows) is not > 0
        score = torch.where(region, logits[:, k], torch.zeros_like(logits[:, k])).sum()
        grads = torch.autograd.grad(score, calls, retain_graph=True, allow_unused=True)
        for act, grad, coords in zip(calls, grads, windows):
            if grad is None:
                continue
            place = (slice(None), k) + (tuple(coords[0][2:]) if coords is not None else ())
            maps[place] += (act * grad).sum(1)
    crop = tuple(slice(p, p + s) for p, s in zip(pad, logits.shape[2:]))
    return maps[(slice(None), slice(None), *crop)].relu(), logits


def test_roles_follow_the_prompt_kind(vista):
    for kind, pre_head in PRE_HEAD.items():
        roles = discover_roles(PromptedVista3D(vista, kind), (1, 1, 32, 32, 32))
        assert roles.head == ("class_head" if kind == "classes" else "point_head")
        assert roles.roles["pre_head"] == pre_head
        assert roles.roles["bottleneck"] == "image_encoder.encoder.layers.4.blocks"
        branch = "up_layers_auto" if kind == "classes" else "up_layers"
        assert all(f".{branch}." in roles.roles[f"decoder.{n}"] for n in range(4))


def test_class_prompt_whole_volume_equals_autograd(vista):
    x = _image((32, 32, 32))
    ids = [5, 3]  # the result follows the order given
    result = Vista3DSegCAM(vista, layers=PRE_HEAD["classes"])(x, classes=ids)  # named: no 64³ probe for roles
    expected, logits = reference_hirescam(
        vista, PRE_HEAD["classes"], lambda: vista(x, class_vector=torch.tensor([[5], [3]]), transpose=True)
    )
    assert result.classes == (5, 3) and result.map.shape == (1, 2, 32, 32, 32)
    assert bool((logits > 0).any()) and float(expected.max()) > 0
    torch.testing.assert_close(result.map.as_tensor(), expected, rtol=0, atol=1e-6 * float(expected.abs().max()))
    torch.testing.assert_close(result.prediction, logits)


def test_class_prompt_sliding_windows_equal_monai_inferer(vista):
    x, roi = _image((48, 32, 32), seed=2), (32, 32, 32)  # two overlapping windows
    explainer = Vista3DSegCAM(vista, layers="pre_head", roi_size=roi)
    streamed = explainer(x, classes=[3, 7])

    def forward():
        def predictor(window, coords):
            return vista(window, patch_coords=coords, class_vector=torch.tensor([[3], [7]]), transpose=True)

        return sliding_window_inference(x, roi, 1, predictor, overlap=0.25, mode="constant", with_coord=True)

    expected, logits = reference_hirescam(vista, PRE_HEAD["classes"], forward)
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(streamed.map.as_tensor(), expected, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(streamed.prediction, logits)
    two_pass = explainer(x, classes=[3, 7], pred=logits)  # the prediction given: region first, then the CAM
    torch.testing.assert_close(two_pass.map.as_tensor(), streamed.map.as_tensor(), rtol=0, atol=1e-10 * scale)


def test_point_prompt_whole_volume_equals_autograd(vista):
    x = _image((32, 32, 32), seed=3)
    points, labels = torch.tensor([[[9.0, 12.0, 20.0], [22.0, 18.0, 6.0]]]), torch.tensor([[1, 0]])
    result = Vista3DSegCAM(vista, layers=PRE_HEAD["points"])(x, points=points[0], point_labels=labels[0])
    expected, logits = reference_hirescam(
        vista, PRE_HEAD["points"], lambda: vista(x, point_coords=points, point_labels=labels, transpose=True)
    )
    assert result.map.shape == (1, 1, 32, 32, 32) and float(expected.max()) > 0
    torch.testing.assert_close(result.map.as_tensor(), expected, rtol=0, atol=1e-6 * float(expected.abs().max()))
    torch.testing.assert_close(result.prediction, logits)


def test_point_prompt_windows_equal_point_based_window_inferer(vista):
    """One window per click (the second click's window is shifted inside the image, the image padded in its last
    dimension), outputs summed where they overlap; voxels outside every window (NaN for MONAI) are out of the region."""
    x, roi = _image((56, 40, 24), seed=4), (32, 32, 32)
    points, labels = torch.tensor([[[10.0, 14.0, 12.0], [50.0, 30.0, 9.0]]]), torch.tensor([[1, 1]])
    explainer = Vista3DSegCAM(vista, roi_size=roi)
    streamed = explainer(x, points=points[0], point_labels=labels[0])

    def forward():  # its buffers take the default dtype: float64 here, as the image
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return point_based_window_inferer(x, roi, vista, points, labels, transpose=True)
        finally:
            torch.set_default_dtype(default)

    expected, logits = reference_hirescam(vista, PRE_HEAD["points"], forward, pad=(0, 0, 4))
    covered = ~torch.isnan(logits)
    assert 0 < int(covered.sum()) < covered.numel()  # some voxels lie outside both windows
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(streamed.map.as_tensor(), expected, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(streamed.prediction[covered], logits[covered])
    assert not bool(streamed.prediction[~covered].any())  # 0 where MONAI has NaN: never in "pred"
    two_pass = explainer(x, points=points[0], point_labels=labels[0], pred=streamed.prediction)
    torch.testing.assert_close(two_pass.map.as_tensor(), streamed.map.as_tensor(), rtol=0, atol=1e-10 * scale)


def test_point_windows_match_monai():
    grid = point_windows(torch.tensor([[3.0, 70.0, 20.0]]), (32, 32, 32))((40, 80, 24))
    assert grid.pad == [4, 4, 0, 0, 0, 0] and grid.padded_shape == (40, 80, 32)
    assert grid.slices == [(slice(0, 32), slice(48, 80), slice(0, 32))]  # shifted inside the (padded) image
    assert bool((grid.count() == 1).all())


def test_label_regions_use_vista3d_ids(vista):
    x = _image((32, 32, 32), seed=5)
    label = torch.zeros((1, 1, 32, 32, 32), dtype=torch.long)
    label[..., 4:12, 4:12, 4:12] = 7
    result = Vista3DSegCAM(vista, layers=PRE_HEAD["classes"])(x, classes=[7, 3], region="label", label=label)
    assert bool(result.region[0, 0].any()) and not bool(result.region[0, 1].any())
    assert bool(result.map[0, 0].any()) and not bool(result.map[0, 1].any())  # empty region: zero map


def test_bad_prompts_are_refused(vista):
    explainer = Vista3DSegCAM(vista, layers=PRE_HEAD["classes"])
    x = _image((32, 32, 32))
    with pytest.raises(ValueError, match="class prompt needs"):
        explainer(x)
    with pytest.raises(ValueError, match="point_labels"):
        explainer(x, points=[[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="one object"):
        explainer(x, points=[[1.0, 2.0, 3.0]], point_labels=[1], classes=[1, 2])
    with pytest.raises(TypeError, match="VISTA3D"):
        Vista3DSegCAM(torch.nn.Conv3d(1, 2, 1))
    with pytest.raises(ValueError, match="occlusion is not supported"):
        Vista3DSegCAM(vista, method="occlusion")
    with pytest.raises(ValueError, match="contrast"):
        explainer(x, classes=[1, 2], contrast=2)


@pytest.mark.parametrize("kind", ["classes", "points"])
def test_input_gradient_of_a_prompt_equals_autograd(vista, kind, monkeypatch):
    """Input attributions explain prompts too: ``gradient`` (signed, ``relu=False``) equals autograd's dS/dx through
    MONAI's inferer of the prompted forward (class prompts: sliding windows; a click: its point window, whose
    ``copy.deepcopy`` of the input, which would cut the graph, is made the identity here)."""
    x, roi = _image((48, 32, 32), seed=6), (32, 32, 32)
    points, labels = torch.tensor([[[20.0, 14.0, 12.0]]]), torch.tensor([[1]])
    explainer = Vista3DSegCAM(vista, method="gradient", relu=False, roi_size=roi)
    if kind == "classes":
        result = explainer(x, classes=[7])

        def forward(image):
            def predictor(window, coords):
                return vista(window, patch_coords=coords, class_vector=torch.tensor([[7]]), transpose=True)

            return sliding_window_inference(image, roi, 1, predictor, overlap=0.25, mode="constant", with_coord=True)
    else:
        result = explainer(x, points=points[0], point_labels=labels[0])
        monkeypatch.setattr(point_inferer.copy, "deepcopy", lambda value: value)

        def forward(image):
            default = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64)
            try:
                return torch.as_tensor(point_based_window_inferer(image, roi, vista, points, labels, transpose=True))
            finally:
                torch.set_default_dtype(default)

    image = x.clone().requires_grad_()
    logits = forward(image)[:, 0]
    score = torch.where(logits > 0, logits, torch.zeros_like(logits)).sum()  # NaN outside the windows: not > 0
    (expected,) = torch.autograd.grad(score, image)
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(result["input"].as_tensor(), expected, rtol=0, atol=1e-6 * float(expected.abs().max()))


def test_a_request_builds_the_prompt_explainer(vista):
    """The explainer contract: a request for a VISTA3D network builds Vista3DSegCAM with the bundle inferer's windows,
    and it describes itself like every explainer."""
    from monai_segcam.explainers import ExplainRequest

    class Vista3dInferer:  # the model-zoo bundle's inferer keeps these three settings
        roi_size, sw_batch_size, use_point_window = (32, 32, 32), 2, False

    explainer = ExplainRequest.from_inferer(Vista3dInferer(), method="gradcam", layers="pre_head").build(vista)
    assert isinstance(explainer, Vista3DSegCAM) and explainer.roi_size == (32, 32, 32)
    assert explainer.result_keys == ("pre_head",) and explainer.method_name == "gradcam"
    assert explainer.settings()["roi_size"] == [32, 32, 32] and explainer.settings()["use_point_window"] is False
    assert explainer.settings()["sw_batch_size"] == 2
