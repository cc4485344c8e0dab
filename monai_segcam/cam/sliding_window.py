# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Sliding-window Seg-CAMs: volumes of any size, windows on ``sw_device``, exact stitching on ``device``.

MONAI's sliding-window output is ``Y(v) = sum_w beta_w(v) f_w(v)`` with ``beta_w = importance_w / sum importance``.
The score of the *stitched* output, ``S = sum_v T(v) Y(v)``, has for window ``w`` the exact gradient given by a
vector-Jacobian product of that window's output with the cotangent ``T * beta_w`` cropped to the window. Hence:

- the region M is defined once on the whole volume (from a given or a stitched prediction), never per window;
- when the prediction is needed it comes from the same forward pass as the CAM: each window's activations and the
  graph from them to the logits are kept (within ``activation_budget`` bytes, else recomputed) until the region is
  known, so a window runs forward once. For a region known voxel by voxel (``"pred"``, ``"fp"``, ``"fn"``, or one not
  taken from the prediction) and a rule that needs nothing summed over every window first, a window's region is set
  as soon as the stitched prediction over it is final (every window overlapping it has run) and its backward runs
  then, so only the windows waiting for their neighbours are kept (14 of 27 for a 3×3×3 grid);
- windows that do not touch M need no backward pass (and, for local rules, no forward pass either);
- local rules (HiRes, XRes, LayerCAM) add their per-window maps, upsampled to the window: the blending weights are
  already in the gradients;
- global-weight rules (Grad-CAM, Grad-CAM++, XGrad-CAM, Eigen-CAM, Score-CAM) first sum their statistics over all
  windows (phase 1, :py:meth:`~monai_segcam.cam.methods.CAMRule.collect_statistics`), then combine each window's
  activations with the global weights and blend them exactly like the prediction (phase 2);
- an ensemble and test-time flips (:py:mod:`monai_segcam.cam.terms`) add up per term: each term's gradient comes
  from the same vector-Jacobian product of the mean logits, its map is flipped back; global-weight rules pool the
  statistics of a member's flips;
- nothing is normalised per window. With one window covering the volume the result equals :py:class:`SegCAM`
  (which *is* this engine with one window).

Window positions and importance maps come from MONAI's own utilities with the inferer's parameters
(:py:class:`~monai_segcam.cam.windows.WindowGrid`), so CAM and prediction align voxel for voxel.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor
from monai.utils import BlendMode, PytorchPadMode, optional_import
from torch import nn
from torch.profiler import record_function

from ..utils.enums import CAMTarget
from .base import CAMEngine
from .engine import (
    check_classes,
    check_contrast,
    check_image,
    check_output,
    network_spatial_dims,
    tensor_sum,
    upsample,
)
from .heads import class_chunks, class_gradients
from .methods import CAMRule
from .regions import Region, as_region, region_cotangent, region_weights, warn_empty_regions
from .roundoff import zero_roundoff_maps
from .terms import TermCapture, WindowPlace, term_gradients
from .windows import GridFactory, WindowedEngine, WindowGrid, WindowSettings, window_index, window_slices

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["SlidingWindowSegCAM", "window_slices"]

Stats = dict[tuple[str, int, int], list[torch.Tensor]]


class SlidingWindowSegCAM(CAMEngine, WindowedEngine):
    """Seg-CAMs of volumes of any size with sliding windows, blended exactly like MONAI blends the prediction.

    Args:
        network: the segmentation network, on ``sw_device``; or several (an ensemble whose logits are averaged).
        roi_size: the window size (non-positive or ``None`` components take the image size).
        layers, method, target, relu, multi_label, output_selector, method_kwargs: as :py:class:`~monai_segcam.SegCAM`.
        sw_batch_size: windows per forward pass.
        overlap: window overlap per dimension, in [0, 1).
        mode: blending, ``"constant"`` or ``"gaussian"``.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        padding_mode, cval: how images smaller than the window are padded.
        sw_device: where windows run (e.g. ``"cuda"``); defaults to the network's device.
        device: where the volume-sized maps are accumulated; defaults to the image's device.
        progress: show a progress bar over windows.
        activation_budget: bytes of window activations (and, when the prediction is computed, of their autograd
            graphs) kept between the passes; past it, windows run forward again. Defaults to 1 GiB. With the
            prediction computed and a voxel-wise region, a window's graph is kept only until every window overlapping
            it has run (about half the windows of a 3×3×3 grid at once).
        cpu_thresh: like ``SlidingWindowInferer``: accumulate on CPU when the image has more voxels than this.
        scorecam_batch_size: channels masked at a time for ``"scorecam"``: each window forward pass then holds
            ``sw_batch_size * scorecam_batch_size`` masked windows, and ``device`` holds two buffers of
            ``scorecam_batch_size`` (input and output) channels of the volume.
        flips: test-time flips, sets of spatial axes (``[(), (0,), (1,), (0, 1)]``; see
            :py:func:`~monai_segcam.cam.terms.mirror_flips`); the explained logits are the mean over flips (and
            networks) of the flipped-back outputs.
        window_grid: another window scheme, ``fn(spatial_shape) -> WindowGrid`` (e.g. nnU-Net's tiles); by default
            MONAI's grid with the settings above.
        amp: mixed precision: windows run under ``torch.autocast`` (as a bundle's ``amp: true`` evaluator predicts),
            the cotangent is scaled so that half-precision gradients neither underflow nor overflow, and maps and
            statistics accumulate in the image's precision.
        amp_dtype: the autocast type; defaults to float16 on CUDA and bfloat16 on CPU.

    Attributes:
        batch_classes: the gradients of several classes from one batched backward (one einsum at a per-voxel linear
            head, see :py:mod:`~monai_segcam.cam.heads`); ``False``: one backward per class. Defaults to True.

    Example:
        .. code-block:: python

            sw_cam = SlidingWindowSegCAM(net, roi_size=(96, 96, 96), overlap=0.25, mode="gaussian", sw_device="cuda")
            maps = sw_cam(image, classes=[1, 2], region="pred").map  # (B, 2, *spatial) on the image's grid
            # or reuse a bundle's inferer settings:
            sw_cam = SlidingWindowSegCAM.from_inferer(inferer, net, layers="pre_head", method="hirescam")
    """

    batch_classes = True

    def __init__(
        self,
        network: nn.Module | Sequence[nn.Module],
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
        flips: Sequence[Sequence[int]] | None = None,
        window_grid: GridFactory | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(
            network, layers, method, target, relu, multi_label, output_selector, flips, amp, amp_dtype,
            _probe_shape(network, roi_size), **method_kwargs,
        )  # fmt: skip
        if scorecam_batch_size < 1:
            raise ValueError(f"scorecam_batch_size must be a positive integer, got {scorecam_batch_size}.")
        self.window = WindowSettings(
            roi_size, sw_batch_size, overlap, mode, sigma_scale, padding_mode, cval, sw_device, device, progress,
            cpu_thresh, window_grid,
        )  # fmt: skip
        self.scorecam_batch_size = scorecam_batch_size
        self.activation_budget = activation_budget

    def settings(self) -> dict[str, Any]:
        """The CAM settings, the window layout and the ``activation_budget``."""
        return {**super().settings(), **self.window.describe(), "activation_budget": self.activation_budget}

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The stitched logits ``(B, C, *spatial)`` on ``device``, exactly as MONAI's ``sliding_window_inference``
        with this object's settings (mean over the ensemble and flips; networks in ``eval()`` mode, restored); a
        ``MetaTensor`` image gives a ``MetaTensor`` with its metadata, as MONAI's does."""
        x = check_image(image, network_spatial_dims(self.terms.networks[0]))
        sw_device, device = self._devices(x)
        windows = _WindowPass(self, x, self.grid(x.shape[2:], sw_device, x.dtype), device, sw_device, clean=True)
        with torch.no_grad(), self.terms.capture(differentiable=False, with_layers=False) as run:
            logits = windows.first_pass(run, keep=False)[windows.grid.crop]
        return MetaTensor(logits).copy_meta_from(image) if isinstance(image, MetaTensor) else logits

    def _devices(self, x: torch.Tensor) -> tuple[torch.device, torch.device]:
        """Where windows run and where volume buffers accumulate."""
        return self.window.devices(x, self.terms.networks[0])

    def _explain(self, image, classes, region, pred, label, contrast=None):
        x = check_image(image, network_spatial_dims(self.terms.networks[0]))
        spatial = tuple(x.shape[2:])
        sw_device, device = self._devices(x)
        region = as_region(region)
        windows = _WindowPass(self, x, self.grid(spatial, sw_device, x.dtype), device, sw_device, contrast)
        if pred is None and windows.num_points > 1 and region.needs_prediction:
            pred = self.predict(x)  # the region comes from the clean prediction, not from the points'
        if pred is not None:
            pred = torch.as_tensor(pred).to(device)
            if tuple(pred.shape[2:]) != spatial or pred.shape[0] != x.shape[0]:
                raise ValueError(f"pred shape {tuple(pred.shape)} does not match the image {tuple(x.shape)}.")
            check_output(pred, self.layers, "pred")
        logits_given = pred is not None and pred.is_floating_point() and pred.shape[1] > 1
        stitched = pred if logits_given and windows.num_points == 1 else None
        needs_logits = self.target == CAMTarget.PROBABILITIES
        from_prediction = region.needs_prediction and pred is None
        if stitched is None and (needs_logits or from_prediction) and windows.streams(region, from_prediction):
            maps, weights, stitched = windows.stream(region, classes, label, pred, from_prediction)
            return maps, weights, windows.grid.crop, pred if pred is not None else stitched
        if stitched is None and (needs_logits or from_prediction):
            stitched = windows.predict_and_keep()[windows.grid.crop]
            check_output(stitched, self.layers, "The stitched network output")
        source = pred if pred is not None else stitched
        num_channels = source.shape[1] if source is not None and source.shape[1] > 1 else windows.probe_channels()
        classes = check_classes(classes, num_channels)
        windows.contrast = check_contrast(contrast, classes, num_channels)
        if contrast is not None and not self.rule.class_specific:
            raise ValueError(f"{self.rule.method_name} is class-agnostic: a contrast class does not change its map.")
        with record_function("segcam::region"):
            weights = region_weights(region, source, classes, spatial, x.shape[0], label, self.multi_label, device)
        windows.set_region(weights, stitched, classes)
        return windows.explain(), weights, windows.grid.crop, source


def _probe_shape(network: nn.Module | Sequence[nn.Module], roi_size: Sequence[int] | int) -> tuple[int, ...] | None:
    """The window size as the probe of layer-role discovery, when it is fully given (a fixed-size network then needs
    no other probe)."""
    first = network if isinstance(network, nn.Module) else next(iter(network), None)
    dims = network_spatial_dims(first) if isinstance(first, nn.Module) else None
    roi = (roi_size,) * (dims or 0) if isinstance(roi_size, int) else tuple(roi_size or ())
    return roi if roi and all(isinstance(r, int) and r > 0 for r in roi) else None


@dataclass
class _Cached:
    """One window group's forward pass, kept between passes: its activations per layer and term (detached, on
    ``device``) and, until its backward ran, the logits with the graph from the differentiable activations."""

    acts: dict[str, list[torch.Tensor]]
    logits: torch.Tensor | None = None
    graph_acts: dict[str, list[torch.Tensor]] | None = None
    acts_bytes: int = 0
    graph_bytes: int = 0
    heads: list | None = None


def _bounding_box(mask: torch.Tensor) -> tuple[slice, ...] | None:
    """The smallest box holding the ``True`` voxels of a boolean ``mask``; ``None`` when it has none."""
    box = []
    for d in range(mask.ndim):
        hits = mask.movedim(d, 0).flatten(1).any(1).nonzero()
        if hits.numel() == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


class _SavedBytes:
    """Counts the bytes autograd saves for backward during a forward pass (parameters and repeats excluded)."""

    def __init__(self, exclude: set[int]) -> None:
        self.total, self.seen = 0, set(exclude)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in self.seen:
            self.seen.add(pointer)
            self.total += tensor.untyped_storage().nbytes()
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor


class _WindowPass:
    """One sliding-window CAM computation: the padded image, the grid, the region, the kept window passes and the
    accumulated maps. It is also the *source* a rule's :py:meth:`~monai_segcam.cam.methods.CAMRule.collect_statistics`
    reads (``gradient_statistics``, ``channels``, ``blended_activations``, ``masked_scores``)."""

    def __init__(
        self, cam: SlidingWindowSegCAM, x: torch.Tensor, grid: WindowGrid, device, sw_device, contrast: int | None = None,
        clean: bool = False,
    ) -> None:
        self.cam, self.grid, self.device, self.sw_device = cam, grid, device, sw_device
        self.rule: CAMRule = cam.rule
        self.contrast = contrast
        # input attributions' points (noisy copies, path points) are items: item e is image e // num_points
        self.points = None if clean else self.rule.input_points(x)
        self.num_points = 1 if self.points is None else self.points.count
        self.num_items = x.shape[0] * self.num_points
        self._point: tuple[int, torch.Tensor] | None = None
        self.num_terms = cam.terms.num_terms
        self.scorecam_batch_size = cam.scorecam_batch_size
        self.x = grid.pad_image(x)
        self.crop = grid.crop
        self.importance = grid.importance.to(device=sw_device, dtype=x.dtype)
        self.count = grid.count(device).to(x.dtype)
        self.windows = [(e, window) for e in range(self.num_items) for window in grid.slices]
        size = cam.sw_batch_size
        self.all_groups = [list(range(i, min(i + size, len(self.windows)))) for i in range(0, len(self.windows), size)]
        self.cache: dict[tuple[int, ...], _Cached] = {}
        self.budget_left = cam.activation_budget
        self._channels: dict[str, list[int]] = {}
        self.num_positions: dict[str, int] = {}
        self.streamed: Stats | None = None

    # the region ------------------------------------------------------------------------------------------------

    def set_region(
        self, weights: torch.Tensor, stitched: torch.Tensor | None, classes: tuple[int, ...], pending: bool = False
    ) -> None:
        """The region weights and stitched logits (image grid) the CAM explains; windows touching no region forget
        their graphs (they need no backward). ``pending``: the weights are filled in window by window
        (:py:meth:`complete`), until then every window counts as touching."""
        self.classes = classes
        self.weights = self.grid.pad_zeros(weights)
        self.stitched = None if stitched is None else self.grid.pad_zeros(stitched)
        n = len(classes)
        self.touched = [[True] * n if pending else self.window_touches(k) for k in range(len(self.windows))]
        channels = n * self.rule.map_channels(self.x.shape[1])
        self.maps = {
            layer.key: torch.zeros((self.x.shape[0], channels, *self.x.shape[2:]), dtype=self.x.dtype,
                                   device=self.device)
            for layer in self.cam.layers
        }  # fmt: skip
        self.scales = {key: value.new_zeros((value.shape[0], n)) for key, value in self.maps.items()}
        for group in list(self.cache):
            if not any(any(self.touched[k]) for k in group):
                self.drop_graph(group)

    def window_touches(self, k: int) -> list[bool]:
        """Per class, whether window ``k`` touches the region."""
        e, window = self.windows[k]
        return self.weights[window_index(window, self.image_of(e), slice(None))].flatten(1).any(1).tolist()

    def image_of(self, item: int) -> int:
        """The batch image of window-pass item ``item`` (an input attribution's point of it)."""
        return item // self.num_points

    def item_volume(self, item: int) -> torch.Tensor:
        """The padded volume ``(1, C, *padded)`` of item ``item``: the image, or the point of an input attribution
        (the last one is kept: an item's windows run one after another)."""
        if self.points is None:
            return self.x[item : item + 1]
        if self._point is None or self._point[0] != item:
            self._point = (item, self.grid.pad_image(self.points.volume(item)))
        return self._point[1]

    def classes_touched(self, group: Sequence[int]) -> list[int]:
        return [i for i in range(len(self.classes)) if any(self.touched[k][i] for k in group)]

    # window passes ---------------------------------------------------------------------------------------------

    def progress(self, items: Iterable, desc: str | None) -> Iterable:
        """``items`` with a progress bar titled ``desc`` when ``progress`` is on."""
        if self.cam.progress and has_tqdm and desc is not None:
            return tqdm(list(items), desc=desc, unit="batch")
        return items

    def groups(self, only_touching: bool, desc: str | None) -> Iterator[tuple[int, ...]]:
        """Batches of ``sw_batch_size`` window indices (only those touching the region when ``only_touching``): the
        kept groups when windows were kept, else the touching windows batched densely."""
        if self.cache or not only_touching:
            groups = [g for g in self.all_groups if not only_touching or any(any(self.touched[k]) for k in g)]
        else:
            indices = [k for k, touched in enumerate(self.touched) if any(touched)]
            size = self.cam.sw_batch_size
            groups = [indices[i : i + size] for i in range(0, len(indices), size)]
        return iter(tuple(g) for g in self.progress(groups, desc))

    def window_batch(self, group: Sequence[int], volume: torch.Tensor | None = None) -> torch.Tensor:
        """The group's windows of ``volume`` (default: the padded image) stacked on ``sw_device``."""
        if volume is None:
            return torch.cat([self.item_volume(e)[(slice(None), slice(None), *w)] for e, w in (self.windows[k] for k in group)])
        return torch.cat([volume[(slice(b, b + 1), slice(None), *w)] for b, w in (self.windows[k] for k in group)])

    def place(self, group: Sequence[int]) -> WindowPlace:
        """Where the group's windows lie (their slices in the padded grid, the grid's padding)."""
        return [self.windows[k][1] for k in group], self.grid.pad

    def forward(self, group: Sequence[int], run: TermCapture) -> torch.Tensor:
        """The group's windows through every term; ``run.activations`` holds their activations."""
        windows = self.window_batch(group).to(self.sw_device)
        with record_function("segcam::forward"):
            logits = run(windows, self.place(group))
        if tuple(logits.shape[2:]) != tuple(windows.shape[2:]):
            raise ValueError(
                f"The network output grid {tuple(logits.shape[2:])} differs from the input grid "
                f"{tuple(windows.shape[2:])}; CAMs are defined on the input grid of a segmentation network."
            )
        flips = len(self.cam.terms.flips)
        self._channels = {key: [a.shape[1] for a in acts[::flips]] for key, acts in run.activations.items()}
        self.num_positions = {key: acts[0].shape[2:].numel() for key, acts in run.activations.items()}
        return logits

    def fetch(
        self, group: tuple[int, ...], run: TermCapture, need_graph: bool, keep: bool = False
    ) -> tuple[Any, dict, dict]:
        """The group's logits (with their graph when ``need_graph``), differentiable activations and detached
        activations on ``device``: from the kept pass when it has what is needed, else by running it again (and,
        with ``keep``, keeping its activations within the budget for the next pass)."""
        cached = self.cache.get(group)
        if cached is not None and (cached.logits is not None or not need_graph):
            return cached.logits, cached.graph_acts or cached.acts, cached.acts
        logits = self.forward(group, run)
        if keep and group not in self.cache:
            self.keep(group, None, run, 0)
        detached = {key: [a.detach().to(self.x.dtype) for a in acts] for key, acts in run.activations.items()}
        return logits, dict(run.activations), detached

    def keep(self, group: tuple[int, ...], logits: torch.Tensor | None, run: TermCapture, graph_bytes: int) -> None:
        """Keep the group's pass within ``activation_budget`` (the graph only when the rule needs gradients)."""
        acts = {key: [a.detach().to(self.device, self.x.dtype) for a in terms] for key, terms in run.activations.items()}
        acts_bytes = sum(a.numel() * a.element_size() for terms in acts.values() for a in terms)
        graph = logits is not None and self.rule.needs_gradients
        graph_bytes = graph_bytes if graph else 0
        if acts_bytes + graph_bytes > self.budget_left:
            return
        self.budget_left -= acts_bytes + graph_bytes
        self.cache[group] = _Cached(
            acts, logits if graph else None, dict(run.activations) if graph else None, acts_bytes, graph_bytes,
            list(run.heads) if graph else None,
        )  # fmt: skip

    def drop_graph(self, group: tuple[int, ...]) -> None:
        """Forget the group's kept graph (its backward ran or is not needed), keeping its activations."""
        cached = self.cache.get(group)
        if cached is not None and cached.graph_bytes:
            self.budget_left += cached.graph_bytes
            self.cache[group] = _Cached(cached.acts, acts_bytes=cached.acts_bytes)

    def forget(self, group: tuple[int, ...]) -> None:
        """Forget everything kept of the group."""
        cached = self.cache.pop(group, None)
        if cached is not None:
            self.budget_left += cached.acts_bytes + cached.graph_bytes

    def first_pass(
        self, run: TermCapture, keep: bool, after_group: Callable[[int, torch.Tensor], None] | None = None
    ) -> torch.Tensor:
        """Every window through the network: the stitched logits on the padded grid, keeping the windows' passes
        (``keep``) for the CAM. ``after_group(g, total)`` runs after group ``g`` was added to the running sum
        ``total`` and divides the voxels it completes in place (:py:meth:`stream`)."""
        total: torch.Tensor | None = None
        params = {p.untyped_storage().data_ptr() for net in self.cam.terms.networks for p in net.parameters()}
        desc = "prediction" if not keep else "CAM windows (prediction)" if after_group is None else "CAM windows"
        for g, group in enumerate(self.progress(self.all_groups, desc)):
            group = tuple(group)
            saved = _SavedBytes(params)
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                logits = self.forward(group, run)
            with record_function("segcam::stitch"):
                out = logits.detach() * self.importance
                if total is None:
                    total = out.new_zeros((self.num_items, out.shape[1], *self.x.shape[2:]), device=self.device)
                for j, (b, window) in enumerate(self.windows[k] for k in group):
                    total[(b, slice(None), *window)] += out[j].to(self.device)
            if keep:
                self.keep(group, logits, run, saved.total)
            if after_group is not None:
                after_group(g, total)
        assert total is not None
        return total if after_group is not None else total / self.count

    def predict_and_keep(self) -> torch.Tensor:
        """The stitched logits (padded grid) from the same forward pass as the CAM: the windows' activations (and
        graphs, for gradient rules) are kept within the budget."""
        gradients = self.rule.needs_gradients
        with torch.enable_grad() if gradients else torch.no_grad(), self.cam.terms.capture(gradients) as run:
            return self.first_pass(run, keep=True)

    def probe_channels(self) -> int:
        """The network's output channels from the first window group's pass (kept for the CAM)."""
        gradients = self.rule.needs_gradients
        group = tuple(self.all_groups[0])
        with torch.enable_grad() if gradients else torch.no_grad(), self.cam.terms.capture(gradients) as run:
            logits = self.forward(group, run)
            self.keep(group, logits, run, 0)
        return logits.shape[1]

    # one pass: each window's CAM as soon as the prediction over it is final -------------------------------------

    def streams(self, region: Region, from_prediction: bool) -> bool:
        """Whether :py:meth:`stream` applies: a gradient rule whose statistics need nothing summed over every window
        first, and a region known voxel by voxel (or not taken from the stitched prediction)."""
        rule = self.rule
        plain_statistics = type(rule).collect_statistics is CAMRule.collect_statistics and not rule.needs_activation_sum
        return rule.needs_gradients and (rule.local or plain_statistics) and (region.voxelwise or not from_prediction)

    def stream(
        self, region: Region, classes: Any, label: Any, pred: torch.Tensor | None, from_prediction: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The prediction and the CAM in one pass over the windows. Each window's stitched prediction is final once
        every window overlapping it has run; then its region is set and its backward runs from its kept graph (a
        local rule adds its maps, a global-weight rule its statistics), so only the windows between a window and its
        last overlapping one are kept. Returns the raw maps, the region weights and the stitched logits (image
        grid)."""
        schedule = self.completion_schedule()
        self.final = torch.zeros((self.num_items, 1, *self.x.shape[2:]), dtype=torch.bool, device=self.device)
        label = None if label is None else torch.as_tensor(label).to(self.device)
        stats: Stats = {}

        def after_group(g: int, total: torch.Tensor) -> None:
            if g == 0:
                checked = check_classes(classes, total.shape[1])
                self.contrast = check_contrast(self.contrast, checked, total.shape[1])
                self.start_stream(total, checked, region, pred, label, from_prediction)
            for group in schedule[g]:
                for k in group:
                    self.complete(k, region if from_prediction else None, label)
                if self.rule.local:
                    self.local_maps(group, run)
                else:
                    self.group_statistics(group, run, stats)

        with torch.enable_grad(), self.cam.terms.capture() as run:
            stitched = self.first_pass(run, keep=True, after_group=after_group)
        self.streamed = self.mean_over_flips(stats)
        maps = self.exact_zeros(self.rule.finish_maps(self)) if self.rule.local else self.explain()
        weights = self.weights[self.crop]
        if from_prediction:
            warn_empty_regions(weights, self.classes, stacklevel=5)
        return maps, weights, stitched[self.crop]

    def start_stream(
        self, total: torch.Tensor, classes: tuple[int, ...], region: Region, source: torch.Tensor | None,
        label: torch.Tensor | None, from_prediction: bool,
    ) -> None:
        """The region's buffers once the classes are known: filled window by window (``from_prediction``), else
        the whole region now."""  # fmt: skip
        spatial, batch = self.grid.spatial_shape, self.x.shape[0]
        if from_prediction:
            weights = torch.zeros((batch, len(classes), *spatial), device=self.device)
        else:
            weights = region_weights(region, source, classes, spatial, batch, label, self.cam.multi_label, self.device)
        self.set_region(weights, None, classes, pending=from_prediction)
        self.stitched = total  # divided window by window as it becomes final

    def completion_schedule(self) -> list[list[tuple[int, ...]]]:
        """For each window group ``g``, the groups whose windows' stitched prediction is final once ``g`` has run: a
        window is final after the last group holding a window that overlaps it."""
        group_of = torch.tensor([g for g, group in enumerate(self.all_groups) for _ in group])
        starts = torch.tensor([[s.start for s in window] for _, window in self.windows])
        stops = torch.tensor([[s.stop for s in window] for _, window in self.windows])
        items = torch.tensor([b for b, _ in self.windows])
        last = torch.empty(len(self.windows), dtype=torch.long)
        for first in range(0, len(self.windows), 1024):
            rows = slice(first, first + 1024)
            overlap = ((starts[rows, None] < stops[None]) & (starts[None] < stops[rows, None])).all(-1)
            overlap &= items[rows, None] == items[None]
            last[rows] = torch.where(overlap, group_of[None], -1).amax(1)
        schedule: list[list[tuple[int, ...]]] = [[] for _ in self.all_groups]
        for group in self.all_groups:
            schedule[int(last[group].max())].append(tuple(group))
        return schedule

    def complete(self, k: int, region: Region | None, label: torch.Tensor | None) -> None:
        """Window ``k``'s stitched prediction is final: divide its voxels not yet divided, then (``region`` given) set
        their region weights, and note the classes the window touches."""
        b, window = self.windows[k]
        stitched = self.stitched
        assert stitched is not None  # the running sum (start_stream)
        new = _bounding_box(~self.final[window_index(window, b, 0)])  # earlier windows completed the rest
        if new is not None:
            box = tuple(slice(w.start + n.start, w.start + n.stop) for w, n in zip(window, new))
            index = window_index(box, slice(b, b + 1), slice(None))
            with record_function("segcam::stitch"):
                block = stitched[index]
                stitched[index] = torch.where(self.final[index], block, block / self.count[window_index(box, 0, 0)])
                self.final[index] = True
            check_output(stitched[index], self.cam.layers, "The stitched network output")
            inner = tuple(slice(max(w.start, c.start), min(w.stop, c.stop)) for w, c in zip(box, self.crop[2:]))
            if region is not None and all(s.start < s.stop for s in inner):
                self.set_block_weights(b, inner, region, label)
        self.touched[k] = self.window_touches(k)

    def set_block_weights(self, b: int, inner: tuple[slice, ...], region: Region, label: torch.Tensor | None) -> None:
        """The region weights of batch item ``b`` over the box ``inner`` (padded grid, inside the image) from the
        final stitched prediction there."""
        assert self.stitched is not None
        with record_function("segcam::region"):
            logits = self.stitched[(slice(b, b + 1), slice(None), *inner)]
            if label is not None:
                image = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(inner, self.crop[2:]))
                label = label[(slice(b, b + 1) if label.shape[0] > 1 else slice(0, 1), slice(None), *image)]
            values = region.weights(logits, self.classes, logits.shape[2:], 1, label=label, multi_label=self.cam.multi_label)
            self.weights[(slice(b, b + 1), slice(None), *inner)] = values.to(self.weights.dtype)

    # the CAM ---------------------------------------------------------------------------------------------------

    def explain(self) -> dict[str, torch.Tensor]:
        """Raw maps ``{layer: (B, n, *padded)}`` of the region."""
        if self.rule.local:
            with torch.enable_grad(), self.cam.terms.capture() as run:
                self.local_pass(run)
            return self.exact_zeros(self.rule.finish_maps(self))
        stats = self.rule.collect_statistics(self)
        for group in list(self.cache):  # graphs are no longer needed
            self.drop_graph(group)
        self.combine_pass(stats)
        return self.exact_zeros({key: value / self.count for key, value in self.maps.items()})

    def exact_zeros(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``maps`` with each map at float round-off of its terms' scale set to exact zeros (one warning)."""
        modules = {layer.key: layer.module_name for layer in self.cam.layers}
        return zero_roundoff_maps(maps, self.scales, self.x.dtype, self.classes, self.rule.method_name, modules,
                                  stacklevel=6)  # fmt: skip

    def note_scale(self, key: str, group: Sequence[int], i: int, scale: torch.Tensor) -> None:
        """Keep the largest terms' scale of class ``i``'s map per batch item from the group's scale maps ``(n, 1, *)``."""
        peaks = scale.flatten(1).amax(1).to(self.device, self.scales[key].dtype)
        items = torch.tensor([self.image_of(self.windows[k][0]) for k in group], device=self.device)
        column = self.scales[key][:, i]
        column.scatter_reduce_(0, items, peaks, reduce="amax")

    def cotangent(self, group: Sequence[int], logits: torch.Tensor, i: int, compact: bool = False) -> torch.Tensor:
        """Region cotangent of class ``i`` (minus the contrast class's) for the group's windows, times each window's
        blending weight (and an input attribution's point weight); ``compact`` (``target="logits"``, no contrast): its
        one non-zero channel ``(n, 1, *roi)``, the class's."""
        parts = []
        target, multi_label = self.cam.target, self.cam.multi_label
        with record_function("segcam::cotangent"):
            for j, (e, window) in enumerate(self.windows[k] for k in group):
                index = (slice(e, e + 1), slice(None), *window)
                source = self.stitched[index].to(self.sw_device) if self.stitched is not None else logits[j : j + 1].detach()
                b = self.image_of(e)
                weights = self.weights[(slice(b, b + 1), slice(i, i + 1), *window)].to(self.sw_device)
                beta = self.importance / self.count[(slice(None), slice(None), *window)].to(self.sw_device)
                if self.points is not None:
                    beta = beta * self.points.weights[e % self.num_points]
                if compact:
                    parts.append((weights * beta).to(source.dtype))
                else:
                    parts.append(region_cotangent(source, weights * beta, self.classes[i], target, multi_label, self.contrast))
            return torch.cat(parts)

    def class_gradients(
        self, group: tuple[int, ...], logits: torch.Tensor, acts: dict, run: TermCapture, todo: Sequence[int]
    ) -> Iterator[tuple[int, dict[str, list[torch.Tensor]]]]:
        """``(i, {layer: [G of each term]})`` for each class ``i`` of ``todo``: chunks of classes through one batched
        backward (one einsum at a per-voxel linear head, :py:mod:`~monai_segcam.cam.heads`), or class by class
        without ``batch_classes``."""
        terms = self.cam.terms
        if not self.cam.batch_classes:
            for n, i in enumerate(todo):
                yield i, term_gradients(logits, acts, self.cotangent(group, logits, i), n != len(todo) - 1, terms.amp)
            return
        cached = self.cache.get(group)
        heads = cached.heads if cached is not None and cached.heads is not None else run.heads
        compact = self.cam.target == CAMTarget.LOGITS and self.contrast is None
        size = logits.element_size()
        cotangent = logits.numel() // logits.shape[1] if compact else logits.numel()
        per_class = size * (2 * sum(a.numel() for per_term in acts.values() for a in per_term) + cotangent)
        for chunk in class_chunks(len(todo), per_class):
            picked = [todo[n] for n in chunk]
            cotangents = torch.stack([self.cotangent(group, logits, i, compact) for i in picked])
            channels = [self.classes[i] for i in picked] if compact else None
            grads = class_gradients(logits, acts, heads, cotangents, channels, terms.flip, terms.amp)
            yield from zip(picked, grads)

    def add(self, key: str, group: Sequence[int], i: int, window_maps: torch.Tensor) -> None:
        """Accumulate per-window maps ``(n, m, *roi)`` of class ``i`` into the volume (``m`` channels per class: 1, or
        the input channels of an input attribution); the points of an input attribution add to their image's."""
        m = window_maps.shape[1]
        for j, (e, window) in enumerate(self.windows[k] for k in group):
            index = window_index(window, self.image_of(e), slice(i * m, (i + 1) * m))
            self.maps[key][index] += window_maps[j].to(self.device)

    def local_pass(self, run: TermCapture) -> None:
        """Element-wise rules: per window and class, ``sum_t flip_t(rule(A_t, G_t))`` upsampled and added."""
        for group in self.groups(only_touching=True, desc="CAM windows"):
            self.local_maps(group, run)

    def local_maps(self, group: tuple[int, ...], run: TermCapture) -> None:
        """Add the group's maps of a local rule (every class its windows touch), then forget its kept pass."""
        roi, terms = self.importance.shape[2:], self.cam.terms
        todo = self.classes_touched(group)
        if todo:
            logits, acts, detached = self.fetch(group, run, need_graph=True)
        for i, grads in self.class_gradients(group, logits, acts, run, todo) if todo else ():
            with record_function("segcam::maps"):
                for key, per_term in grads.items():
                    pairs = [(a, g.to(a.dtype)) for a, g in zip(detached[key], per_term)]
                    raw = tensor_sum(terms.flip(self.rule.local_map(a, g), t) for t, (a, g) in enumerate(pairs))
                    self.add(key, group, i, upsample(raw, roi))
                    self.note_scale(key, group, i, tensor_sum(terms.flip(self.rule.local_scale(a, g), t)
                                                              for t, (a, g) in enumerate(pairs)))  # fmt: skip
        self.forget(group)

    def gradient_statistics(self) -> Stats:
        """Phase 1: per ``(layer, class, member)`` statistics of every window's ``(A, num_terms * G)`` summed over
        windows and averaged over a member's flips (gradient-free rules: of ``A``, one entry per member); the
        statistics of the one-pass stream when it ran."""
        if self.streamed is not None:
            return self.streamed
        stats: Stats = {}
        gradients = self.rule.needs_gradients
        sums = self.activation_sums() if self.rule.needs_activation_sum else None
        with torch.enable_grad() if gradients else torch.no_grad(), self.cam.terms.capture(gradients) as run:
            for group in self.groups(only_touching=False, desc="CAM windows (phase 1)"):
                self.group_statistics(group, run, stats, sums)
        return self.mean_over_flips(stats)

    def group_statistics(self, group: tuple[int, ...], run: TermCapture, stats: Stats, sums: dict | None = None) -> None:
        """Add the group's statistics to ``stats`` (its activations stay kept within the budget, its graph goes)."""
        gradients = self.rule.needs_gradients
        todo = self.classes_touched(group) if gradients else []
        logits, acts, detached = self.fetch(group, run, need_graph=bool(todo), keep=True)
        grads = dict(self.class_gradients(group, logits, acts, run, todo)) if todo else {}
        for i in range(len(self.classes)) if gradients else [0]:
            self.accumulate(stats, group, i, detached, grads.get(i), sums)
        self.drop_graph(group)  # its graph is no longer needed

    def mean_over_flips(self, stats: Stats) -> Stats:
        flips = len(self.cam.terms.flips)
        return {key: [value / flips for value in values] for key, values in stats.items()}

    def activation_sums(self) -> dict[tuple[str, int], torch.Tensor]:
        """``sum_u A`` (the rule's :py:meth:`~monai_segcam.cam.methods.CAMRule.sum_activations`) per batch item and
        channel over every window, per ``(layer, term)``: from the kept passes, the other windows run forward (and
        are kept within the budget)."""
        sums: dict[tuple[str, int], torch.Tensor] = {}
        with torch.no_grad(), self.cam.terms.capture(differentiable=False) as run:
            for group in self.groups(only_touching=False, desc="CAM windows (activation sums)"):
                _, _, detached = self.fetch(group, run, need_graph=False, keep=True)
                items = torch.tensor([self.windows[k][0] for k in group], device=self.device)
                for key, per_term in detached.items():
                    for t, a in enumerate(per_term):
                        total = sums.setdefault((key, t), a.new_zeros((self.x.shape[0], a.shape[1]), device=self.device))
                        total.index_add_(0, items, self.rule.sum_activations(a).to(self.device))
        return sums

    def accumulate(
        self, stats: Stats, group: Sequence[int], i: int, acts: dict, grads: dict | None, sums: dict | None = None
    ) -> None:
        """Add the statistics of each window and term to its batch item's and member's total (``sums``: the
        activation sums of rules that need them)."""
        terms = self.cam.terms
        items = torch.tensor([self.windows[k][0] for k in group], device=self.device)
        for key, per_term in acts.items():
            for t, a in enumerate(per_term):
                if grads is not None:
                    g = grads[key][t].to(self.device, a.dtype) * self.num_terms
                else:
                    g = torch.zeros_like(a) if self.rule.needs_gradients else None
                if sums is None:
                    values = self.rule.statistics(a.to(self.device), g)
                else:
                    values = self.rule.statistics(a.to(self.device), g, activation_sum=sums[(key, t)][items])
                totals = stats.setdefault(
                    (key, i, terms.member(t)), [v.new_zeros((self.x.shape[0], *v.shape[1:])) for v in values]
                )
                for total, value in zip(totals, values):
                    total.index_add_(0, items, value)

    def combine_pass(self, stats: Mapping[tuple[str, int, int], Sequence[torch.Tensor]]) -> None:
        """Phase 2: combine each window's activations with the global weights (per member) and blend them like the
        prediction; terms are averaged, each flipped back."""
        roi, terms = self.importance.shape[2:], self.cam.terms
        combination, scales = {}, {}
        for key, i, m in itertools.product(self.maps, range(len(self.classes)), range(len(terms.networks))):
            summed = stats.get((key, i, m)) or stats[(key, 0, m)]  # class-agnostic rules have class index 0 only
            combination[(key, i, m)] = self.rule.weights(summed, self.num_positions[key])
            scales[(key, i, m)] = self.rule.weight_scale(summed, self.num_positions[key])
        self.warn_diagnoses(stats)
        with torch.no_grad(), terms.capture(differentiable=False) as run:
            for group in self.groups(only_touching=False, desc="CAM windows (phase 2)"):
                _, _, acts = self.fetch(group, run, need_graph=False)
                items = [self.windows[k][0] for k in group]
                for key, per_term in acts.items():
                    for i in range(len(self.classes)):
                        parts, scale_parts = [], []
                        for t, a in enumerate(per_term):
                            weights, offset = combination[(key, i, terms.member(t))]
                            offset = None if offset is None else offset[items].to(a.device)
                            parts.append(terms.flip(self.rule.combine(a, weights[items].to(a.device), offset), t))
                            scale = scales[(key, i, terms.member(t))][items].to(a.device)
                            scale_parts.append(terms.flip(self.rule.combine_scale(a, scale, offset), t))
                        raw = tensor_sum(parts)
                        raw = raw / self.num_terms if self.num_terms > 1 else raw
                        self.add(key, group, i, upsample(raw.to(self.sw_device), roi) * self.importance)
                        self.note_scale(key, group, i, tensor_sum(scale_parts) / self.num_terms)

    def warn_diagnoses(self, stats: Mapping[tuple[str, int, int], Sequence[torch.Tensor]]) -> None:
        """One warning with the rule's :py:meth:`~monai_segcam.cam.methods.CAMRule.diagnose` of each layer, class
        and member's summed statistics (e.g. Grad-CAM++'s near-singular denominators)."""
        found = []
        for (key, i, m), summed in stats.items():
            message = self.rule.diagnose(summed, self.num_positions[key])
            if message is not None:
                member = f", member {m}" if len(self.cam.terms.networks) > 1 else ""
                found.append(f"layer {key!r}, class {self.classes[i]}{member}: {message}")
        if found:
            warnings.warn("\n".join(found), stacklevel=7)

    # the source of Score-CAM -----------------------------------------------------------------------------------

    def blended_activations(self, key: str, channels: slice, member: int = 0) -> torch.Tensor:
        """Channels of member ``member``'s layer ``key`` (the mean over its flips, each flipped back) upsampled to each
        window and blended over all windows: ``(B, k, *padded)``; the windows' passes are kept within the budget."""
        roi, terms = self.importance.shape[2:], self.cam.terms
        flips = len(terms.flips)
        total = None
        with torch.no_grad(), terms.capture(differentiable=False) as run:
            for group in self.groups(only_touching=False, desc=None):
                _, _, detached = self.fetch(group, run, need_graph=False, keep=True)  # the next channels reuse it
                per_term = detached[key][member * flips : (member + 1) * flips]
                raw = tensor_sum(terms.flip(a[:, channels], member * flips + f) for f, a in enumerate(per_term)) / flips
                blended = upsample(raw.to(self.sw_device), roi) * self.importance
                if total is None:
                    total = blended.new_zeros((self.x.shape[0], blended.shape[1], *self.x.shape[2:]), device=self.device)
                for j, (b, window) in enumerate(self.windows[k] for k in group):
                    total[window_index(window, b, slice(None))] += blended[j].to(self.device)
        assert total is not None  # a grid has at least one window
        return total / self.count

    def masked_scores(self, masks: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The region's mean (or, ``reduction="sum"``, summed) score ``(B, k, n)`` of the stitched prediction of the
        input masked by each of ``masks`` ``(B, k, *padded)`` (of ``t_c - t_c2`` with a contrast class); the padding
        keeps ``cval``, as MONAI pads a masked image."""
        k, spatial = masks.shape[1], masks.shape[2:]
        masked = self.x.to(self.device)[:, None] * masks[:, :, None]
        if self.grid.padded:
            inside = torch.zeros((1, 1, 1, *spatial), dtype=torch.bool, device=self.device)
            inside[(slice(None), *self.crop)] = True
            masked = torch.where(inside, masked, self.grid.cval)
        logits_only = self.cam.target != CAMTarget.PROBABILITIES
        explained = list(self.classes) + ([] if self.contrast is None else [self.contrast])
        picked = explained if logits_only else slice(None)  # softmax and sigmoid need every channel
        stitched = None
        with torch.no_grad(), self.cam.terms.capture(differentiable=False, with_layers=False) as run:
            for group in self.groups(only_touching=True, desc=None):
                windows = torch.cat([masked[window_index(w, b, slice(None), slice(None))] for b, w in (self.windows[i] for i in group)])
                slices, pad = self.place(group)
                out = run(windows.to(self.sw_device), ([w for w in slices for _ in range(k)], pad))[:, picked]
                out = out.view(len(group), k, *out.shape[1:]) * self.importance[:, None]
                if stitched is None:
                    stitched = out.new_zeros((masks.shape[0], k, out.shape[2], *spatial), device=self.device)
                for j, (b, window) in enumerate(self.windows[i] for i in group):
                    stitched[window_index(window, b, slice(None), slice(None))] += out[j].to(self.device)
        if stitched is None:  # no window touches the region: every score is 0
            return masks.new_zeros((masks.shape[0], k, len(self.classes)))
        stitched = stitched / self.count[:, None]
        if not logits_only:
            stitched = torch.sigmoid(stitched) if self.cam.multi_label else torch.softmax(stitched, dim=2)
            stitched = stitched[:, :, explained]
        if self.contrast is not None:  # the score of t_c - t_c2
            stitched = stitched[:, :, :-1] - stitched[:, :, -1:]
        region = self.weights.to(self.device)
        summed = (stitched * region[:, None]).flatten(3).sum(-1)
        return summed if reduction == "sum" else summed / region.flatten(2).sum(-1).clamp_min(1e-12)[:, None]

    @property
    def channels(self) -> dict[str, list[int]]:
        """Channels per layer and member (from one window's pass when none ran yet)."""
        if not self._channels:
            with torch.no_grad(), self.cam.terms.capture(differentiable=False) as run:
                self.forward(tuple(self.all_groups[0]), run)
        return self._channels
