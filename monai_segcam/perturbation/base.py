# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What the perturbation explainers share: the network, MONAI's window settings, the explained target and region."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.utils import BlendMode, PytorchPadMode, look_up_option
from torch import nn

from ..cam.capture import ActivationCapture
from ..cam.engine import check_classes, check_image, check_output, network_spatial_dims
from ..cam.layers import unwrap_network
from ..cam.regions import as_region, region_weights
from ..cam.selection import select_logits
from ..utils.enums import CAMTarget
from .scoring import StitchedScorer
from .windows import WindowLayout

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
        network: the segmentation network (wrappers such as DDP are unwrapped).
        roi_size: the window size; ``None`` or non-positive components take the image size (``None``: whole volume).
        sw_batch_size: clean windows per forward pass.
        overlap, mode, sigma_scale, padding_mode, cval: MONAI's sliding-window settings.
        sw_device: where windows run; defaults to the network's device.
        device: where volume-sized tensors are stitched and accumulated; defaults to the image's device.
        target: ``"logits"`` or ``"probabilities"`` (softmax; sigmoid with ``multi_label``).
        multi_label: the network has independent sigmoid outputs (prediction = logit > 0).
        output_selector: picks the logits from a tuple/dict network output (index, key or callable).
        logits_budget: bytes kept between passes: clean window logits on ``device`` first, then each window's
            blending weights and weighted region on ``sw_device``; what does not fit is recomputed when needed.
        progress: show progress bars.
        cpu_thresh: like ``SlidingWindowInferer``: stitch on the CPU when the image has more voxels than this.

    Example:
        .. code-block:: python

            class MyPerturbation(StitchedExplainer):  # a new perturbation method on the same machinery
                def __call__(self, image, classes=1, region="pred", pred=None, label=None):
                    with torch.no_grad(), ActivationCapture(self.network, []):
                        state = self._prepare(image, classes, region, pred, label)
                        return state.scorer.region_score()  # S(x) (B, n_classes) of the stitched prediction
    """

    def __init__(
        self,
        network: nn.Module,
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
    ) -> None:
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {sw_batch_size}.")
        if logits_budget < 0:
            raise ValueError(f"logits_budget must be a non-negative number of bytes, got {logits_budget}.")
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
        self.window_passes = 0

    @classmethod
    def from_inferer(cls, inferer: SlidingWindowInferer, network: nn.Module, **kwargs: Any) -> StitchedExplainer:
        """Build from a ``SlidingWindowInferer`` (e.g. a bundle's ``@inferer``), reusing its window settings.

        Example:
            .. code-block:: python

                occlusion = SegOcclusion.from_inferer(inferer, network, mask_size=16, baseline="blur")
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
        return cls(network, **{**settings, **kwargs})

    @property
    def layers(self) -> list:
        """No layer: perturbation maps live on the input (their layer key is ``"input"``)."""
        return []

    def _predictor(self, window: torch.Tensor) -> torch.Tensor:
        return select_logits(unwrap_network(self.network)(window), self.output_selector, window.shape[2:])

    def _devices(self, image: torch.Tensor) -> tuple[torch.device, torch.device]:
        """``(sw_device, device)`` for an image."""
        if self.sw_device is not None:
            sw_device = torch.device(self.sw_device)
        else:
            sw_device = next((p.device for p in self.network.parameters()), image.device)
        if self.cpu_thresh is not None and image.shape[2:].numel() > self.cpu_thresh:
            return sw_device, torch.device("cpu")
        return sw_device, torch.device(self.device) if self.device is not None else image.device

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The stitched logits, with MONAI's ``sliding_window_inference`` and this object's settings (in ``eval()``
        mode; the network's state is restored afterwards)."""
        sw_device, device = self._devices(image)
        roi = -1 if self.roi_size is None else self.roi_size
        with torch.no_grad(), ActivationCapture(self.network, []):
            return sliding_window_inference(
                image, roi, self.sw_batch_size, self._predictor, self.overlap, self.mode, self.sigma_scale,
                self.padding_mode, self.cval, sw_device, device, self.progress,
            )  # fmt: skip

    def _prepare(self, image, classes, region, pred, label) -> Prepared:
        """Check the inputs, lay out the windows, build the region (from ``pred`` or a stitched clean pass, whose
        window logits are kept for later) and the scorer's clean contributions. Call inside ``ActivationCapture``."""
        x = check_image(image, network_spatial_dims(self.network))
        sw_device, device = self._devices(x)
        x = x.to(device)
        spatial = tuple(x.shape[2:])
        layout = WindowLayout.from_monai(
            spatial, self.roi_size, self.overlap, self.mode, self.sigma_scale, sw_device, device, x.dtype
        )
        scorer = StitchedScorer(
            self._predictor, layout, layout.pad_image(x, self.padding_mode, self.cval), self.target,
            self.multi_label, sw_device, self.sw_batch_size, self.logits_budget, self.progress, self.padding_mode,
            self.cval,
        )  # fmt: skip
        region = as_region(region)
        if pred is not None:
            pred = pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)
            pred = pred.detach().to(device)
            if tuple(pred.shape[2:]) != spatial or pred.shape[0] != x.shape[0]:
                raise ValueError(f"pred shape {tuple(pred.shape)} does not match the image {tuple(x.shape)}.")
            check_output(pred, [], "pred")
        elif region.needs_prediction:
            pred = scorer.stitch(scorer.units)[layout.crop]
            check_output(pred, [], "The stitched network output")
        if pred is not None and pred.shape[1] > 1:
            num_channels = pred.shape[1]
        else:
            num_channels = next(scorer.clean_outputs(scorer.units[:1]))[1].shape[0]
        classes = check_classes(classes, num_channels)
        weights = region_weights(region, pred, classes, spatial, x.shape[0], label, self.multi_label, device=device)
        scorer.set_region(weights, classes)
        return Prepared(x, scorer, weights, classes, pred)
