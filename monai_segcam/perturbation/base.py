# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What the perturbation explainers share: the network(s), MONAI's window settings, the explained target and region."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.utils import BlendMode, PytorchPadMode, ensure_tuple_rep, look_up_option
from torch import nn

from ..cam.engine import check_classes, check_image, check_output, network_spatial_dims
from ..cam.regions import as_region, region_weights
from ..cam.terms import TermCapture, Terms
from ..cam.windows import GridFactory, WindowGrid, inferer_window_settings
from ..utils.enums import CAMTarget
from .scoring import StitchedScorer

__all__ = ["StitchedExplainer", "Prepared"]


@dataclass
class Prepared:
    """One call's state: the checked image on the stitching device, its scorer, region weights, classes, prediction."""

    x: torch.Tensor
    scorer: StitchedScorer
    weights: torch.Tensor
    classes: tuple[int, ...]
    prediction: torch.Tensor | None


class StitchedExplainer:
    """Base of the perturbation explainers: a network explained through MONAI's stitched sliding-window prediction
    (or the whole volume when ``roi_size`` is ``None``).

    Args:
        network: the segmentation network (wrappers such as DDP are unwrapped), or several (an ensemble whose logits
            are averaged).
        roi_size: the window size; ``None`` or non-positive components take the image size (``None``: whole volume).
        sw_batch_size: clean windows per forward pass.
        overlap, mode, sigma_scale, padding_mode, cval: MONAI's sliding-window settings.
        sw_device: where windows run; defaults to the (first) network's device.
        device: where volume-sized tensors are stitched and accumulated; defaults to the image's device.
        target: ``"logits"`` or ``"probabilities"`` (softmax; sigmoid with ``multi_label``).
        multi_label: the network has independent sigmoid outputs (prediction = logit > 0).
        output_selector: picks the logits from a structured network output (index, key or callable; by default the
            full-resolution tensor).
        logits_budget: bytes kept between passes: clean window logits on ``device`` first, then each window's
            blending weights and weighted region on ``sw_device``; what does not fit is recomputed when needed.
        progress: show progress bars.
        cpu_thresh: like ``SlidingWindowInferer``: stitch on the CPU when the image has more voxels than this.
        flips: test-time flips (sets of spatial axes, ``()`` the identity) averaged with the members, as the CAM
            engines explain them.
        window_grid: another window scheme, ``fn(spatial_shape) -> WindowGrid`` (e.g. nnU-Net's tiles).
        amp, amp_dtype: run the networks under ``torch.autocast`` (mixed precision).

    Example:
        .. code-block:: python

            class MyPerturbation(StitchedExplainer):  # a new perturbation method on the same machinery
                def __call__(self, image, classes=1, region="pred", pred=None, label=None):
                    with torch.no_grad(), self.terms.capture(differentiable=False, with_layers=False) as run:
                        state = self._prepare(run, image, classes, region, pred, label)
                        return state.scorer.region_score()  # S(x) (B, n_classes) of the stitched prediction
    """

    def __init__(
        self,
        network: nn.Module | Sequence[nn.Module],
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 1,
        overlap: Sequence[float] | float = 0.25,
        mode: str = BlendMode.CONSTANT,
        sigma_scale: Sequence[float] | float = 0.125,
        padding_mode: str = PytorchPadMode.CONSTANT,
        cval: float = 0.0,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        target: str = CAMTarget.LOGITS,
        multi_label: bool = False,
        output_selector: int | str | Callable[[Any], torch.Tensor] | None = None,
        logits_budget: int = 1 << 30,
        progress: bool = False,
        cpu_thresh: int | None = None,
        flips: Sequence[Sequence[int]] | None = None,
        window_grid: GridFactory | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        self.terms = Terms(network, flips, [], output_selector, amp, amp_dtype)
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size}.")
        if logits_budget < 0:
            raise ValueError(f"logits_budget must be a non-negative number of bytes, got {logits_budget}.")
        overlaps = ensure_tuple_rep(overlap, 1) if isinstance(overlap, (int, float)) else tuple(overlap)
        if any(not 0 <= o < 1 for o in overlaps):
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        self.network = network
        self.roi_size = roi_size
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.mode = look_up_option(mode, BlendMode)
        self.sigma_scale = sigma_scale
        self.padding_mode = look_up_option(padding_mode, PytorchPadMode)
        self.cval = cval
        self.sw_device = sw_device
        self.device = device
        self.target = look_up_option(target, CAMTarget)
        self.multi_label = multi_label
        self.output_selector = output_selector
        self.logits_budget = logits_budget
        self.progress = progress
        self.cpu_thresh = cpu_thresh
        self.window_grid = window_grid
        self.window_passes = 0

    @classmethod
    def from_inferer(cls, inferer: SlidingWindowInferer, network: nn.Module, **kwargs: Any) -> StitchedExplainer:
        """Build from a ``SlidingWindowInferer`` (e.g. a bundle's ``@inferer``), reusing its window settings.

        Example:
            .. code-block:: python

                occlusion = SegOcclusion.from_inferer(inferer, network, mask_size=16, baseline="blur")
        """
        return cls(network, **{**inferer_window_settings(inferer), **kwargs})

    @property
    def layers(self) -> list:
        """No layer: perturbation maps live on the input (their layer key is ``"input"``)."""
        return []

    def grid(self, spatial_shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> WindowGrid:
        """The window grid of an image (``window_grid`` when given, else MONAI's; ``roi_size=None``: one window)."""
        if self.window_grid is not None:
            return self.window_grid(tuple(spatial_shape))
        roi = -1 if self.roi_size is None else self.roi_size
        return WindowGrid.from_monai(
            spatial_shape, roi, self.overlap, self.mode, self.sigma_scale, self.padding_mode, self.cval, device, dtype
        )

    def _devices(self, image: torch.Tensor) -> tuple[torch.device, torch.device]:
        """``(sw_device, device)`` for an image."""
        if self.sw_device is not None:
            sw_device = torch.device(self.sw_device)
        else:
            sw_device = next((p.device for p in self.terms.networks[0].parameters()), image.device)
        if self.cpu_thresh is not None and image.shape[2:].numel() > self.cpu_thresh:
            return sw_device, torch.device("cpu")
        return sw_device, torch.device(self.device) if self.device is not None else image.device

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The stitched logits, with MONAI's ``sliding_window_inference`` and this object's settings (mean over the
        members and flips, in ``eval()`` mode; the networks' state is restored afterwards)."""
        sw_device, device = self._devices(image)
        roi = -1 if self.roi_size is None else self.roi_size
        with torch.no_grad(), self.terms.capture(differentiable=False, with_layers=False) as run:
            return sliding_window_inference(
                image, roi, self.sw_batch_size, run, self.overlap, self.mode, self.sigma_scale, self.padding_mode,
                self.cval, sw_device, device, self.progress,
            )  # fmt: skip

    def _prepare(self, run: TermCapture, image, classes, region, pred, label) -> Prepared:
        """Check the inputs, lay out the windows, build the region (from ``pred`` or a stitched clean pass, whose
        window logits are kept for later) and the scorer's clean contributions. ``run`` is the open term capture."""
        x = check_image(image, network_spatial_dims(self.terms.networks[0]))
        sw_device, device = self._devices(x)
        x = x.to(device)
        spatial = tuple(x.shape[2:])
        grid = self.grid(spatial, sw_device, x.dtype)
        scorer = StitchedScorer(
            run, grid, grid.pad_image(x), self.target, self.multi_label, sw_device, self.sw_batch_size,
            self.logits_budget, self.progress,
        )  # fmt: skip
        region = as_region(region)
        if pred is not None:
            pred = pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)
            pred = pred.detach().to(device)
            if tuple(pred.shape[2:]) != spatial or pred.shape[0] != x.shape[0]:
                raise ValueError(f"pred shape {tuple(pred.shape)} does not match the image {tuple(x.shape)}.")
            check_output(pred, [], "pred")
        elif region.needs_prediction:
            pred = scorer.stitch(scorer.units)[grid.crop]
            check_output(pred, [], "The stitched network output")
        if pred is not None and pred.shape[1] > 1:
            num_channels = pred.shape[1]
        else:
            num_channels = next(scorer.clean_outputs(scorer.units[:1]))[1].shape[0]
        classes = check_classes(classes, num_channels)
        weights = region_weights(region, pred, classes, spatial, x.shape[0], label, self.multi_label, device=device)
        scorer.set_region(weights, classes)
        return Prepared(x, scorer, weights, classes, pred)
