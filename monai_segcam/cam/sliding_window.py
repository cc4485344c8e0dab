# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Sliding-window Seg-CAMs: volumes of any size, windows on ``sw_device``, exact stitching on ``device``.

MONAI's sliding-window output is ``Y(v) = sum_w beta_w(v) f_w(v)`` with ``beta_w = importance_w / sum importance``.
The score of the *stitched* output, ``S = sum_v T(v) Y(v)``, has for window ``w`` the exact gradient given by a
vector-Jacobian product of that window's output with the cotangent ``T * beta_w`` cropped to the window. Hence:

- the region M is defined once on the whole volume (from a given or a stitched prediction), never per window;
- windows that do not touch M need no backward pass (and, for local rules, no forward pass either);
- local rules (HiRes, XRes, LayerCAM) add their per-window maps, upsampled to the window: the blending weights are
  already in the gradients;
- global-weight rules (Grad-CAM, Grad-CAM++, XGrad-CAM, Eigen-CAM) first sum their statistics over all windows
  (phase 1), then combine each window's activations with the global weights and blend them exactly like the
  prediction (phase 2; activations are kept on ``device`` within ``activation_budget`` bytes, else recomputed);
- Score-CAM's phase 1 blends each channel's upsampled window activations like the prediction, min-max normalises
  them over the image, and scores the input masked by each with a sliding-window prediction restricted to the
  windows that touch the region (``scorecam_batch_size`` channels at a time); phase 2 is the global-weight one;
- nothing is normalised per window. With one window covering the volume the result equals :py:class:`SegCAM`.

Window positions and importance maps come from MONAI's own utilities with the inferer's parameters, so CAM and
prediction align voxel for voxel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices, get_valid_patch_size
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.utils import BlendMode, PytorchPadMode, ensure_tuple_rep, fall_back_tuple, look_up_option, optional_import
from torch import nn

from ..utils.enums import CAMTarget
from .capture import ActivationCapture
from .engine import (
    CAMEngine,
    check_activations,
    check_classes,
    check_image,
    check_output,
    layer_gradients,
    network_spatial_dims,
    select_output,
    upsample,
)
from .layers import unwrap_network
from .methods import CAMRule, ScoreCAMRule
from .regions import as_region, region_cotangent, region_weights

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["SlidingWindowSegCAM", "window_slices"]


def window_slices(
    spatial_shape: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]
) -> tuple[tuple[int, ...], list[tuple[slice, ...]]]:
    """MONAI's window grid: the padded image size and the window slices (``dense_patch_slices``).

    The scan interval is ``int(roi * (1 - overlap))`` (at least 1), or the whole size when the window covers the
    dimension, exactly as in :py:func:`monai.inferers.sliding_window_inference`.

    Example:
        .. code-block:: python

            padded_size, slices = window_slices((192, 192, 160), (96, 96, 96), (0.25, 0.25, 0.25))  # 27 windows
    """
    image_size = tuple(max(s, r) for s, r in zip(spatial_shape, roi_size))
    interval = tuple(
        r if r == s else max(int(r * (1 - o)), 1) for s, r, o in zip(image_size, roi_size, overlap)
    )  # fmt: skip
    return image_size, dense_patch_slices(image_size, roi_size, interval, return_slice=True)


class SlidingWindowSegCAM(CAMEngine):
    """Seg-CAMs of volumes of any size with sliding windows, blended exactly like MONAI blends the prediction.

    Args:
        network: the segmentation network, on ``sw_device``.
        roi_size: the window size (non-positive or ``None`` components take the image size).
        layers, method, target, relu, multi_label, output_selector, method_kwargs: as :py:class:`~monai_segcam.SegCAM`.
        scorecam_batch_size: channels masked at a time for ``"scorecam"``: each window forward pass then holds
            ``sw_batch_size * scorecam_batch_size`` masked windows, and ``device`` holds two buffers of
            ``scorecam_batch_size`` (input and output) channels of the volume.
        sw_batch_size: windows per forward pass.
        overlap: window overlap per dimension, in [0, 1).
        mode: blending, ``"constant"`` or ``"gaussian"``.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        padding_mode, cval: how images smaller than the window are padded.
        sw_device: where windows run (e.g. ``"cuda"``); defaults to the image's device.
        device: where the volume-sized maps are accumulated; defaults to the image's device.
        progress: show a progress bar over windows.
        activation_budget: bytes of window activations kept on ``device`` between the two phases of global-weight
            rules; above it, phase 2 recomputes the windows' forward passes. Defaults to 1 GiB.
        cpu_thresh: like ``SlidingWindowInferer``: accumulate on CPU when the image has more voxels than this.

    Example:
        .. code-block:: python

            sw_cam = SlidingWindowSegCAM(net, roi_size=(96, 96, 96), overlap=0.25, mode="gaussian", sw_device="cuda")
            maps = sw_cam(image, classes=[1, 2], region="pred")  # (B, 2, *spatial) on the image's grid
            # or reuse a bundle's inferer settings:
            sw_cam = SlidingWindowSegCAM.from_inferer(inferer, net, layers="pre_head", method="hirescam")
    """

    def __init__(
        self,
        network: nn.Module,
        roi_size: Sequence[int] | int,
        layers: str | Sequence[str] = "pre_head",
        method: str | CAMRule = "hirescam",
        target: str = "logits",
        relu: bool = True,
        sw_batch_size: int = 1,
        overlap: Sequence[float] | float = 0.25,
        mode: str = BlendMode.CONSTANT,
        sigma_scale: Sequence[float] | float = 0.125,
        padding_mode: str = PytorchPadMode.CONSTANT,
        cval: float = 0.0,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        multi_label: bool = False,
        output_selector: int | str | Callable[[Any], torch.Tensor] | None = None,
        activation_budget: int = 1 << 30,
        cpu_thresh: int | None = None,
        scorecam_batch_size: int = 8,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(network, layers, method, target, relu, multi_label, output_selector, **method_kwargs)
        if scorecam_batch_size < 1:
            raise ValueError(f"scorecam_batch_size must be a positive integer, got {scorecam_batch_size}.")
        self.scorecam_batch_size = scorecam_batch_size
        self.roi_size = roi_size
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size}.")
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.mode = look_up_option(mode, BlendMode)
        self.sigma_scale = sigma_scale
        self.padding_mode = look_up_option(padding_mode, PytorchPadMode)
        self.cval = cval
        self.sw_device = sw_device
        self.device = device
        self.progress = progress
        self.activation_budget = activation_budget
        self.cpu_thresh = cpu_thresh

    @classmethod
    def from_inferer(cls, inferer: SlidingWindowInferer, network: nn.Module, **cam_kwargs: Any) -> SlidingWindowSegCAM:
        """Build from a ``SlidingWindowInferer`` (e.g. a bundle's ``@inferer``), reusing its window settings.

        Example:
            .. code-block:: python

                sw_cam = SlidingWindowSegCAM.from_inferer(inferer, network, layers=["bottleneck", "pre_head"])
        """
        if not isinstance(inferer, SlidingWindowInferer):
            raise TypeError(f"from_inferer needs a monai.inferers.SlidingWindowInferer, got {type(inferer).__name__}.")
        settings = {
            "roi_size": inferer.roi_size,
            "sw_batch_size": inferer.sw_batch_size,
            "overlap": inferer.overlap,
            "mode": inferer.mode,
            "sigma_scale": inferer.sigma_scale,
            "padding_mode": inferer.padding_mode,
            "cval": inferer.cval,
            "sw_device": inferer.sw_device,
            "device": inferer.device,
            "progress": inferer.progress,
            "cpu_thresh": inferer.cpu_thresh,
        }
        return cls(network, **{**settings, **cam_kwargs})

    def _predictor(self, window: torch.Tensor) -> torch.Tensor:
        # the bare network: a DDP forward may run collectives (a CAM on one rank would block) and a compiled one
        # recompiles for the hooks and fails with retain_graph (several classes); the hooks are on the bare modules
        return select_output(unwrap_network(self.network)(window), self.output_selector)

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The stitched logits, with MONAI's ``sliding_window_inference`` and this object's settings (in ``eval()``
        mode, like the CAM passes; the network's state is restored afterwards)."""
        with torch.no_grad(), ActivationCapture(self.network, []):
            return sliding_window_inference(
                image, self.roi_size, self.sw_batch_size, self._predictor, self.overlap, self.mode, self.sigma_scale,
                self.padding_mode, self.cval, self.sw_device, self._device(image), self.progress,
            )  # fmt: skip

    def _device(self, image: torch.Tensor) -> torch.device:
        if self.cpu_thresh is not None and image.shape[2:].numel() > self.cpu_thresh:
            return torch.device("cpu")
        return torch.device(self.device) if self.device is not None else image.device

    def _explain(self, image, classes, region, pred, label):
        x = check_image(image, network_spatial_dims(self.network))
        spatial = tuple(x.shape[2:])
        device = self._device(x)
        sw_device = torch.device(self.sw_device) if self.sw_device is not None else x.device
        region = as_region(region)
        needs_logits = self.target == CAMTarget.PROBABILITIES
        if pred is not None:
            pred = torch.as_tensor(pred).to(device)
            if tuple(pred.shape[2:]) != spatial or pred.shape[0] != x.shape[0]:
                raise ValueError(f"pred shape {tuple(pred.shape)} does not match the image {tuple(x.shape)}.")
        stitched = pred if pred is not None and pred.is_floating_point() and pred.shape[1] > 1 else None
        if stitched is None and (needs_logits or (region.needs_prediction and pred is None)):
            stitched = self.predict(x).to(device)
        roi = fall_back_tuple(self.roi_size, spatial)
        padded_size, slices = window_slices(spatial, roi, ensure_tuple_rep(self.overlap, len(spatial)))
        pad = []
        for s, r in zip(reversed(spatial), reversed(roi)):
            diff = max(r - s, 0)
            pad += [diff // 2, diff - diff // 2]
        padded = F.pad(x, pad, mode=self.padding_mode, value=self.cval) if any(pad) else x

        source = pred if pred is not None else stitched
        if source is not None:
            check_output(source, self.layers, "pred" if pred is not None else "The stitched network output")
        if source is not None and source.shape[1] > 1:
            num_channels = source.shape[1]
        else:
            num_channels = self._num_channels(padded[(slice(0, 1), slice(None), *slices[0])].to(sw_device))
        classes = check_classes(classes, num_channels)
        weights = region_weights(region, source, classes, spatial, x.shape[0], label, self.multi_label, device=device)
        if any(pad):
            weights = F.pad(weights, pad)
            stitched = F.pad(stitched, pad) if stitched is not None else None
        importance = compute_importance_map(
            get_valid_patch_size(padded_size, roi), self.mode, self.sigma_scale, device=sw_device, dtype=x.dtype
        )[None, None]
        count = torch.zeros((1, 1, *padded_size), dtype=x.dtype, device=device)
        importance_on_device = importance.to(device)
        for window in slices:
            count[(..., *window)] += importance_on_device

        pad_before = [pad[2 * (len(spatial) - 1 - d)] for d in range(len(spatial))]
        crop = (slice(None), slice(None), *(slice(p, p + s) for p, s in zip(pad_before, spatial)))
        job = _Job(self, padded, weights, stitched, classes, slices, importance, count, sw_device, device, crop)
        return job.run(), weights, crop

    def _num_channels(self, window: torch.Tensor) -> int:
        """Output channels from one forward pass of a single window (when no prediction was needed)."""
        with torch.no_grad(), ActivationCapture(self.network, []):
            return self._predictor(window).shape[1]


class _Job:
    """One sliding-window CAM computation (the state shared by its phases)."""

    def __init__(self, cam, x, weights, stitched, classes, slices, importance, count, sw_device, device, crop):
        self.cam, self.x, self.weights, self.stitched, self.classes = cam, x, weights, stitched, classes
        self.crop = crop  # the image inside the padded grid
        self.rule: CAMRule = cam.rule
        self.layers = cam.layers
        self.importance, self.count, self.sw_device, self.device = importance, count, sw_device, device
        batch, spatial = x.shape[0], x.shape[2:]
        self.windows = [(b, window) for b in range(batch) for window in slices]
        # which classes' regions each window touches, scanned once: windows touching none skip the backward pass
        self.touched = [weights[(b, slice(None), *window)].flatten(1).any(1).tolist() for b, window in self.windows]
        self.maps = {
            layer.key: torch.zeros((batch, len(classes), *spatial), dtype=x.dtype, device=device)
            for layer in self.layers
        }
        self.num_positions: dict[str, int] = {}

    def groups(self, only_touching: bool, desc: str | None) -> Iterator[list[int]]:
        """Batches of ``sw_batch_size`` window indices (only those touching the region), with a progress bar
        titled ``desc`` when ``progress`` (none when ``desc`` is ``None``)."""
        indices = [k for k, touched in enumerate(self.touched) if any(touched) or not only_touching]
        groups = [indices[i : i + self.cam.sw_batch_size] for i in range(0, len(indices), self.cam.sw_batch_size)]
        if self.cam.progress and has_tqdm and desc is not None:
            return iter(tqdm(groups, desc=desc, unit="batch"))
        return iter(groups)

    def forward(self, group: list[int], capture: ActivationCapture) -> torch.Tensor:
        """The group's windows through the network, ``capture`` holding their activations of its layers."""
        capture.reset()
        windows = torch.cat([self.x[(slice(b, b + 1), slice(None), *w)] for b, w in (self.windows[i] for i in group)])
        logits = self.cam._predictor(windows.to(self.sw_device))
        check_activations(capture, capture.layers)
        check_output(logits, capture.layers)
        return logits

    def cotangent(self, group: list[int], logits: torch.Tensor, i: int) -> torch.Tensor:
        """Region cotangent of class ``i`` for the group's windows, times each window's blending weight."""
        parts = []
        for j, (b, window) in enumerate(self.windows[k] for k in group):
            index = (slice(b, b + 1), slice(None), *window)
            source = (
                self.stitched[index].to(self.sw_device) if self.stitched is not None else logits[j : j + 1].detach()
            )
            weights = self.weights[(slice(b, b + 1), slice(i, i + 1), *window)].to(self.sw_device)
            beta = self.importance / self.count[(slice(None), slice(None), *window)].to(self.sw_device)
            parts.append(
                region_cotangent(source, weights * beta, self.classes[i], self.cam.target, self.cam.multi_label)
            )
        return torch.cat(parts)

    def add(self, key: str, group: list[int], i: int, window_maps: torch.Tensor) -> None:
        """Accumulate per-window maps ``(n, 1, *roi)`` of class ``i`` into the volume."""
        for j, (b, window) in enumerate(self.windows[k] for k in group):
            self.maps[key][(b, i, *window)] += window_maps[j, 0].to(self.device)

    def run(self) -> dict[str, torch.Tensor]:
        differentiable = self.rule.needs_gradients
        if isinstance(self.rule, ScoreCAMRule):
            stats, kept = self.score_pass()
        else:
            grad_mode = torch.enable_grad() if differentiable else torch.no_grad()
            with grad_mode, ActivationCapture(self.cam.network, self.layers, differentiable) as capture:
                if self.rule.local:
                    self.local_pass(capture)
                    return self.maps
                stats, kept = self.statistics_pass(capture)
        with torch.no_grad(), ActivationCapture(self.cam.network, self.layers, differentiable=False) as capture:
            self.combine_pass(capture, stats, kept)
        count = self.count
        return {key: value / count for key, value in self.maps.items()}

    def local_pass(self, capture: ActivationCapture) -> None:
        roi = self.importance.shape[2:]
        for group in self.groups(only_touching=True, desc="CAM windows"):
            logits = self.forward(group, capture)
            todo = [i for i in range(len(self.classes)) if any(self.touched[k][i] for k in group)]
            for i in todo:
                grads = layer_gradients(logits, capture, self.layers, self.cotangent(group, logits, i), i != todo[-1])
                for layer, grad in zip(self.layers, grads):
                    raw = self.rule.local_map(capture.activations[layer.key].detach(), grad)
                    self.add(layer.key, group, i, upsample(raw, roi))

    def statistics_pass(self, capture: ActivationCapture):
        """Phase 1: per-(layer, class) statistics summed over windows, keeping activations within the budget."""
        stats: dict[tuple[str, int], list[torch.Tensor] | None] = {}
        kept: dict[int, dict[str, torch.Tensor]] | None = {}
        kept_bytes = 0
        for group in self.groups(only_touching=False, desc="CAM windows (phase 1)"):
            logits = self.forward(group, capture)
            acts = {layer.key: capture.activations[layer.key] for layer in self.layers}
            self.num_positions = {key: a.shape[2:].numel() for key, a in acts.items()}
            kept, kept_bytes = self.keep(kept, kept_bytes, group, acts)
            if not self.rule.needs_gradients:
                for key, a in acts.items():
                    self.accumulate(stats, (key, 0), group, self.rule.statistics(a, None))
                continue
            todo = [i for i in range(len(self.classes)) if any(self.touched[k][i] for k in group)]
            grads_by_class = {
                i: layer_gradients(logits, capture, self.layers, self.cotangent(group, logits, i), i != todo[-1])
                for i in todo
            }
            for i in range(len(self.classes)):
                for n, layer in enumerate(self.layers):
                    a = acts[layer.key].detach()
                    g = grads_by_class[i][n] if i in grads_by_class else torch.zeros_like(a)
                    self.accumulate(stats, (layer.key, i), group, self.rule.statistics(a, g))
        return stats, kept

    def score_pass(self):
        """Score-CAM phase 1: per (layer, class), the channel scores ``(B, K)`` that phase 2's softmax weighs.

        For each batch of channels: the layer's activations upsampled to each window and blended like the prediction
        (kept from one pass within the budget, else recomputed), min-max normalised over the image per channel; the
        score of a channel is the region's mean score (logits or probabilities) of the stitched prediction of the
        input masked by it. Voxels of the region are covered only by windows that touch it, so only those run.
        """
        kept, channels = self.keep_activations()
        stats: dict[tuple[str, int], list[torch.Tensor]] = {}
        size = self.cam.scorecam_batch_size
        for layer in self.layers:
            starts = range(0, channels[layer.key], size)
            if self.cam.progress and has_tqdm:
                starts = tqdm(starts, desc=f"Score-CAM channels ({layer.key})", unit="batch")
            scores = []
            for start in starts:
                stitched = self.stitched_activations(layer, slice(start, start + size), kept)
                inside = stitched[self.crop].flatten(2)
                low, high = inside.min(-1).values, inside.max(-1).values
                shape = (*low.shape, *[1] * (stitched.ndim - 2))
                masks = (stitched - low.view(shape)) / (high - low).clamp_min(1e-12).view(shape)
                scores.append(self.masked_scores(masks))
            channel_scores = torch.cat(scores, dim=1)  # (B, K, n)
            for i in range(len(self.classes)):
                stats[(layer.key, i)] = [channel_scores[..., i]]
        return stats, kept

    def keep_activations(self) -> tuple[dict[int, dict[str, torch.Tensor]] | None, dict[str, int]]:
        """One pass over all windows: their activations on ``device`` if within the budget, and channels per layer."""
        kept: dict[int, dict[str, torch.Tensor]] | None = {}
        kept_bytes, channels = 0, {}
        with torch.no_grad(), ActivationCapture(self.cam.network, self.layers, differentiable=False) as capture:
            for group in self.groups(only_touching=False, desc="CAM windows (activations)"):
                self.forward(group, capture)
                acts = {layer.key: capture.activations[layer.key] for layer in self.layers}
                self.num_positions = {key: a.shape[2:].numel() for key, a in acts.items()}
                channels = {key: a.shape[1] for key, a in acts.items()}
                kept, kept_bytes = self.keep(kept, kept_bytes, group, acts)
                if kept is None:
                    break
        return kept, channels

    def keep(self, kept, kept_bytes: int, group: list[int], acts: dict[str, torch.Tensor]):
        """Add the group's activations to ``kept`` (on ``device``) while the total stays within
        ``activation_budget``; past it, ``kept`` becomes ``None`` (phase 2 recomputes) and stays so."""
        if kept is None:
            return None, kept_bytes
        kept_bytes += sum(a.numel() * a.element_size() for a in acts.values())
        if kept_bytes > self.cam.activation_budget:
            return None, kept_bytes
        for j, k in enumerate(group):
            kept[k] = {key: a[j : j + 1].detach().to(self.device) for key, a in acts.items()}
        return kept, kept_bytes

    def stitched_activations(self, layer, channels: slice, kept) -> torch.Tensor:
        """Channels of ``layer`` upsampled to each window and blended over all windows: ``(B, k, *padded)``."""
        roi = self.importance.shape[2:]
        total = None
        with torch.no_grad(), ActivationCapture(self.cam.network, [layer], differentiable=False) as capture:
            for group in self.groups(only_touching=False, desc=None):
                if kept is not None:
                    acts = torch.cat([kept[k][layer.key][:, channels] for k in group]).to(self.sw_device)
                else:
                    self.forward(group, capture)
                    acts = capture.activations[layer.key][:, channels]
                blended = upsample(acts, roi) * self.importance
                if total is None:
                    total = blended.new_zeros((self.x.shape[0], acts.shape[1], *self.x.shape[2:]), device=self.device)
                for j, (b, window) in enumerate(self.windows[k] for k in group):
                    total[(b, slice(None), *window)] += blended[j].to(self.device)
        return total / self.count

    def masked_scores(self, masks: torch.Tensor) -> torch.Tensor:
        """The region's mean score ``(B, k, n)`` of the stitched prediction of the input masked by each of ``masks``
        ``(B, k, *padded)``; the padding keeps ``cval``, as MONAI pads a masked image."""
        k, spatial = masks.shape[1], masks.shape[2:]
        masked = self.x.to(self.device)[:, None] * masks[:, :, None]
        if tuple(self.count.shape[2:]) != tuple(s.stop - s.start for s in self.crop[2:]):  # padded: keep cval
            inside = torch.zeros((1, 1, 1, *spatial), dtype=torch.bool, device=self.device)
            inside[(slice(None), *self.crop)] = True
            masked = torch.where(inside, masked, self.cam.cval)
        logits_only = self.cam.target != CAMTarget.PROBABILITIES
        picked = list(self.classes) if logits_only else slice(None)  # softmax and sigmoid need every channel
        stitched = None
        with torch.no_grad(), ActivationCapture(self.cam.network, []):
            for group in self.groups(only_touching=True, desc=None):
                parts = [masked[(b, slice(None), slice(None), *w)] for b, w in (self.windows[i] for i in group)]
                windows = torch.cat(parts)
                out = self.cam._predictor(windows.to(self.sw_device))[:, picked]
                out = out.view(len(group), k, *out.shape[1:]) * self.importance[:, None]
                if stitched is None:
                    stitched = out.new_zeros((masks.shape[0], k, out.shape[2], *spatial), device=self.device)
                for j, (b, window) in enumerate(self.windows[i] for i in group):
                    stitched[(b, slice(None), slice(None), *window)] += out[j].to(self.device)
        region = self.weights.to(self.device)
        if stitched is None:  # no window touches the region: every score is 0
            return masks.new_zeros((masks.shape[0], k, len(self.classes)))
        stitched = stitched / self.count[:, None]
        if not logits_only:
            stitched = torch.sigmoid(stitched) if self.cam.multi_label else torch.softmax(stitched, dim=2)
            stitched = stitched[:, :, list(self.classes)]
        region_size = region.flatten(2).sum(-1).clamp_min(1e-12)
        return (stitched * region[:, None]).flatten(3).sum(-1) / region_size[:, None]

    def accumulate(self, stats, key, group, values) -> None:
        """Add each window's statistics to its batch item's total."""
        batch = self.x.shape[0]
        totals = stats.get(key)
        if totals is None:
            totals = [v.new_zeros((batch, *v.shape[1:])) for v in values]
            stats[key] = totals
        items = torch.tensor([self.windows[k][0] for k in group], device=values[0].device)
        for total, value in zip(totals, values):
            total.index_add_(0, items, value)

    def combine_pass(self, capture: ActivationCapture, stats, kept) -> None:
        """Phase 2: combine each window's activations with the global weights and blend them like the prediction."""
        roi = self.importance.shape[2:]
        per_class = self.rule.needs_gradients or isinstance(self.rule, ScoreCAMRule)  # Eigen-CAM's are shared
        combination = {
            (layer.key, i): self.rule.weights(stats[(layer.key, i if per_class else 0)], self.num_positions[layer.key])
            for layer in self.layers
            for i in range(len(self.classes))
        }
        for group in self.groups(only_touching=False, desc="CAM windows (phase 2)"):
            if kept is not None:
                acts = {key: torch.cat([kept[k][key] for k in group]).to(self.sw_device) for key in self.maps}
            else:
                self.forward(group, capture)
                acts = {layer.key: capture.activations[layer.key] for layer in self.layers}
            items = [self.windows[k][0] for k in group]
            for key, a in acts.items():
                for i in range(len(self.classes)):
                    weights, offset = combination[(key, i)]
                    offset = None if offset is None else offset[items].to(a.device)
                    raw = self.rule.combine(a, weights[items].to(a.device), offset)
                    self.add(key, group, i, upsample(raw, roi) * self.importance)
