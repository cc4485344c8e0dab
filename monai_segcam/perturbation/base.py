# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What the perturbation explainers share: the network(s), MONAI's window settings, the explained target and region."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from monai.data import MetaTensor
from monai.utils import look_up_option
from torch import nn

from ..cam.base import Explainer
from ..cam.engine import check_classes, check_contrast, check_image, check_output, network_spatial_dims
from ..cam.regions import as_region, region_weights
from ..cam.terms import TermCapture, Terms
from ..cam.windows import WindowedEngine, WindowSettings
from ..utils.enums import CAMTarget
from .scoring import StitchedScorer

__all__ = ["StitchedExplainer", "Prepared"]

R = TypeVar("R")


@dataclass
class Prepared:
    """One call's state: the image as given, the checked image on the stitching device, its scorer, region weights,
    classes, prediction."""

    image: torch.Tensor
    x: torch.Tensor
    scorer: StitchedScorer
    weights: torch.Tensor
    classes: tuple[int, ...]
    prediction: torch.Tensor | None


class StitchedExplainer(WindowedEngine, Explainer[R]):
    """Base of the perturbation explainers: a network explained through MONAI's stitched sliding-window prediction
    (or the whole volume when ``roi_size`` is ``None``).

    Args:
        network: the segmentation network (wrappers such as DDP are unwrapped), or several (an ensemble whose logits
            are averaged).
        roi_size: the window size; ``None`` or non-positive components take the image size (``None``: whole volume).
        target: ``"logits"`` or ``"probabilities"`` (softmax; sigmoid with ``multi_label``).
        multi_label: the network has independent sigmoid outputs (prediction = logit > 0).
        output_selector: picks the logits from a structured network output (index, key or callable; by default the
            full-resolution tensor).
        logits_budget: bytes kept between passes: clean window logits on ``device`` first, then each window's
            blending weights and weighted region on ``sw_device``; what does not fit is recomputed when needed.
        flips: test-time flips (sets of spatial axes, ``()`` the identity) averaged with the members, as the CAM
            engines explain them.
        amp, amp_dtype: run the networks under ``torch.autocast`` (mixed precision).
        window_kwargs: the other window settings (``sw_batch_size``, ``overlap``, ``mode``, ``sigma_scale``,
            ``padding_mode``, ``cval``, ``sw_device``, ``device``, ``progress``, ``cpu_thresh``, ``window_grid``), see
            :py:class:`~monai_segcam.cam.windows.WindowSettings`; they are also read as attributes
            (``explainer.overlap``).

    Example:
        .. code-block:: python

            class MyPerturbation(StitchedExplainer[torch.Tensor]):  # a new perturbation method on the same machinery
                def _explain(self, state):  # under no_grad, with the checked image, region and scorer in ``state``
                    return state.scorer.region_score()  # S(x) (B, n_classes) of the stitched prediction

            scores = MyPerturbation(net, roi_size=(96, 96, 96))(image, classes=[1, 2])
    """

    def __init__(
        self,
        network: nn.Module | Sequence[nn.Module],
        roi_size: Sequence[int] | int | None = None,
        target: str = CAMTarget.LOGITS,
        multi_label: bool = False,
        output_selector: int | str | Callable[[Any], torch.Tensor] | None = None,
        logits_budget: int = 1 << 30,
        flips: Sequence[Sequence[int]] | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
        **window_kwargs: Any,
    ) -> None:
        self.terms = Terms(network, flips, [], output_selector, amp, amp_dtype)
        if logits_budget < 0:
            raise ValueError(f"logits_budget must be a non-negative number of bytes, got {logits_budget}.")
        self.window = WindowSettings(roi_size, **window_kwargs)
        self.network = network
        self.target = look_up_option(target, CAMTarget)
        self.multi_label = multi_label
        self.output_selector = output_selector
        self.logits_budget = logits_budget
        self.window_passes = 0

    @property
    def layers(self) -> list:
        """No layer: perturbation maps live on the input (their layer key is ``"input"``)."""
        return []

    @property
    def result_keys(self) -> tuple[str, ...]:
        """Perturbation maps live on the input: the one key ``"input"``."""
        return ("input",)

    def settings(self) -> dict[str, Any]:
        """The method, the target, mixed precision and the window layout."""
        return {"method": self.method_name, "target": str(self.target), "amp": self.terms.amp, **self.window.describe()}

    def _scorer(self, run: TermCapture, x: torch.Tensor, logits_budget: int) -> tuple[StitchedScorer, torch.Tensor]:
        """The stitched scorer of the checked image ``x`` (moved to the stitching device, also returned)."""
        sw_device, device = self.window.devices(x, self.terms.networks[0])
        x = x.to(device)
        grid = self.grid(x.shape[2:], sw_device, x.dtype)
        scorer = StitchedScorer(
            run, grid, grid.pad_image(x), self.target, self.multi_label, sw_device, self.sw_batch_size, logits_budget,
            self.progress,
        )  # fmt: skip
        return scorer, x

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The stitched logits ``(B, C, *spatial)`` on ``device``: MONAI's ``sliding_window_inference`` with this
        object's settings, or the stitch on ``window_grid`` when given (mean over the members and flips, in
        ``eval()`` mode; the networks' state is restored afterwards); a ``MetaTensor`` image keeps its metadata."""
        x = check_image(image, network_spatial_dims(self.terms.networks[0]))
        with torch.no_grad(), self.terms.capture(differentiable=False, with_layers=False) as run:
            scorer, _ = self._scorer(run, x, logits_budget=0)
            logits = scorer.stitch(scorer.units)[scorer.grid.crop]
        return MetaTensor(logits).copy_meta_from(image) if isinstance(image, MetaTensor) else logits

    def _call(self, image, classes, region, pred, label, contrast=None) -> R:
        with torch.no_grad(), self.terms.capture(differentiable=False, with_layers=False) as run:
            state = self._prepare(run, image, classes, region, pred, label, contrast)
            result = self._explain(state)
        self.window_passes = state.scorer.window_passes
        return result

    def _explain(self, state: Prepared) -> R:
        """The explanation of the prepared call (under ``torch.no_grad()``, inside the networks' term capture)."""
        raise NotImplementedError

    def _prepare(self, run: TermCapture, image, classes, region, pred, label, contrast=None) -> Prepared:
        """Check the inputs, lay out the windows, build the region (from ``pred`` or a stitched clean pass, whose
        window logits are kept for later) and the scorer's clean contributions (of ``S = sum_M (t_c - t_contrast)``
        with a contrast class). ``run`` is the open term capture."""
        x = check_image(image, network_spatial_dims(self.terms.networks[0]))
        scorer, x = self._scorer(run, x, self.logits_budget)
        spatial, device, grid = tuple(x.shape[2:]), x.device, scorer.grid
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
        contrast = check_contrast(contrast, classes, num_channels)
        weights = region_weights(region, pred, classes, spatial, x.shape[0], label, self.multi_label, device=device)
        scorer.set_region(weights, classes, contrast)
        return Prepared(image, x, scorer, weights, classes, pred)
