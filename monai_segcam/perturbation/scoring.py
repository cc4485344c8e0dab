# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Region scores of *stitched* sliding-window predictions of perturbed images, re-running only the windows that change.

MONAI stitches ``Y = sum_w beta_w f_w`` with ``beta_w = importance / count``. The region score of class ``c`` is
``S = sum_v W(v) t_c(Y)(v)`` with ``t`` the logits or the probabilities (softmax, or sigmoid for multi-label
networks) and ``W`` the region weights. Perturbing the image changes only the windows whose input changes, so

- with logits, ``S`` is a sum of per-window terms ``<W beta_w, f_w^c>``: a perturbed image's score is the clean
  score minus the clean terms of the changed windows plus their new terms (no volume is re-stitched);
- with probabilities, ``Y_p = Y + sum_{w changed} beta_w (f_w(x_p) - f_w(x))`` is re-stitched exactly on the box
  covered by the changed windows, and ``S`` compared there;
- a window whose voxels carry no region weight adds nothing to ``S`` whatever its input: it never runs.

The gradient of ``S`` with respect to the input is the sum of per-window vector-Jacobian products with cotangent
``T * beta_w`` (``T = dS/dY``), pulled back through MONAI's padding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.utils import optional_import

from ..cam.engine import all_finite
from ..cam.regions import region_cotangent
from ..cam.windows import WindowGrid, window_index
from ..utils.enums import CAMTarget
from .windows import footprint_mask

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["Perturbation", "StitchedScorer"]


class Perturbation(NamedTuple):
    """One perturbed image: batch item ``item`` with the voxels of ``axes`` (see
    :py:func:`~monai_segcam.perturbation.windows.box_footprint`) of ``channels`` (``None``: all) set to the baseline."""

    item: int
    axes: list[torch.Tensor]
    channels: Sequence[int] | None = None


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class StitchedScorer:
    """Region scores (and their input gradients) of the stitched predictions of one batch of images.

    Args:
        predictor: window ``(N, C, *roi)`` -> logits ``(N, K, *roi)`` (the bare network and output selector).
        grid: the windows of the images' shape (MONAI's, or another scheme's).
        padded: the padded images ``(B, C, *padded)`` on the stitching device.
        target: ``"logits"`` or ``"probabilities"``.
        multi_label: sigmoid instead of softmax for probabilities.
        sw_device: where windows run.
        sw_batch_size: clean windows per forward pass.
        logits_budget: bytes kept between passes: clean window logits (on the stitching device), then each window's
            blending weights and weighted region (on the window device); what does not fit is recomputed.
        progress: show progress bars.

    Attributes:
        window_passes: the number of windows run through the network so far.

    Example:
        .. code-block:: python

            grid = WindowGrid.from_monai(x.shape[2:], roi_size=(64, 64, 64))
            scorer = StitchedScorer(predictor, grid, grid.pad_image(x), "logits", False, device, 4, 1 << 30, False)
            scorer.set_region(region_weights("all", None, [1], x.shape[2:], 1), [1])
            box = box_footprint((slice(0, 8),) * 3, grid)
            drops = scorer.drops([Perturbation(0, box)], grid.pad_image(torch.zeros_like(x)), batch_size=8)
    """

    def __init__(
        self,
        predictor: Callable[[torch.Tensor], torch.Tensor],
        grid: WindowGrid,
        padded: torch.Tensor,
        target: str,
        multi_label: bool,
        sw_device: torch.device,
        sw_batch_size: int,
        logits_budget: int,
        progress: bool,
    ) -> None:
        self.predictor, self.grid, self.padded = predictor, grid, padded
        self.target, self.multi_label = target, multi_label
        self.sw_device, self.device = sw_device, padded.device
        self.sw_batch_size, self.logits_budget, self.progress = sw_batch_size, logits_budget, progress
        self.count = grid.count(padded.device).to(padded.dtype)
        self.units = [(b, k) for b in range(padded.shape[0]) for k in range(len(grid.slices))]
        self.kept: dict[tuple[int, int], torch.Tensor] = {}
        self.cache: dict[tuple, torch.Tensor] = {}
        self.kept_bytes = 0
        self.window_passes = 0
        self.stitched: torch.Tensor | None = None
        self.weights: torch.Tensor  # (B, n, *padded), from set_region
        self.classes: tuple[int, ...] = ()
        self.contrast: int | None = None
        self.relevant: list[tuple[int, int]] = []
        self.clean_scores: dict[tuple[int, int], torch.Tensor] = {}

    # windows ------------------------------------------------------------------------------------------------------

    def index(self, unit: tuple[int, int]) -> tuple[slice, ...]:
        b, k = unit
        return (slice(b, b + 1), slice(None), *self.grid.slices[k])

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of windows, checked (window grid, finite values); counted in ``window_passes``."""
        out = self.predictor(windows.to(self.sw_device))
        if tuple(out.shape[2:]) != tuple(windows.shape[2:]):
            raise ValueError(
                f"The network output grid {tuple(out.shape[2:])} differs from its input grid "
                f"{tuple(windows.shape[2:])}; perturbation maps are defined on the input grid of a segmentation "
                "network."
            )
        if not all_finite(out):
            raise FloatingPointError("The network produced NaN/Inf logits; check the weights and the input.")
        self.window_passes += windows.shape[0]
        return out

    def clean_outputs(
        self, units: list[tuple[int, int]], desc: str | None = None, source: torch.Tensor | None = None
    ) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
        """``(unit, logits (K, *roi) on the stitching device)`` of the windows ``units`` of the clean images, from the
        kept ones or computed ``sw_batch_size`` at a time (and kept while they fit ``logits_budget``); or of
        ``source`` (other padded images, never kept)."""
        kept = self.kept if source is None else {}
        for unit in units:
            if unit in kept:
                yield unit, kept[unit]
        groups = _chunks([u for u in units if u not in kept], self.sw_batch_size)
        if self.progress and has_tqdm and desc is not None and groups:
            groups = tqdm(groups, desc=desc, unit="batch")
        images = self.padded if source is None else source
        for group in groups:
            with torch.no_grad():
                out = self.forward(torch.cat([images[self.index(u)] for u in group])).to(self.device)
            for j, unit in enumerate(group):
                if source is None:
                    self.keep(unit, out[j])
                yield unit, out[j]

    def fits(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` can be kept within ``logits_budget`` (and count it if so)."""
        size = tensor.numel() * tensor.element_size()
        if self.kept_bytes + size > self.logits_budget:
            return False
        self.kept_bytes += size
        return True

    def keep(self, unit: tuple[int, int], logits: torch.Tensor) -> None:
        if self.fits(logits):
            self.kept[unit] = logits

    def cached(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``make()``, kept under ``key`` while it fits the budget."""
        if key in self.cache:
            return self.cache[key]
        value = make()
        if self.fits(value):
            self.cache[key] = value
        return value

    def beta(self, k: int) -> torch.Tensor:
        """Blending weights of window ``k`` ``(*roi)`` on the window device."""
        def make() -> torch.Tensor:
            importance = self.grid.importance.to(device=self.sw_device, dtype=self.padded.dtype)[0, 0]
            return importance / self.count[window_index(self.grid.slices[k], 0, 0)].to(self.sw_device)

        return self.cached(("beta", k), make)

    def weighted_region(self, unit: tuple[int, int]) -> torch.Tensor:
        """``W beta_w`` of one window ``(n, *roi)`` on the window device."""
        return self.cached(
            ("region", unit), lambda: (self.weights[self.index(unit)][0].to(self.sw_device) * self.beta(unit[1]))
        )

    def clean(self, unit: tuple[int, int]) -> torch.Tensor:
        """The clean logits of one window (kept, else recomputed)."""
        return next(self.clean_outputs([unit]))[1]

    def stitch(self, units: list[tuple[int, int]], source: torch.Tensor | None = None) -> torch.Tensor:
        """Stitched logits ``(B, K, *padded)`` from ``units`` (exact on every voxel that only they cover), of the clean
        images or of ``source`` (padded images; then nothing is kept)."""
        total = None
        outputs = self.clean_outputs(units, desc="clean windows" if source is None else None, source=source)
        importance = self.grid.importance.to(self.device)[0]
        for (b, k), logits in outputs:
            if total is None:
                total = logits.new_zeros((self.padded.shape[0], logits.shape[0], *self.grid.padded_shape))
            total[window_index(self.grid.slices[k], b, slice(None))] += logits * importance
        if total is None:
            return self.padded.new_zeros((self.padded.shape[0], 1, *self.grid.padded_shape))
        return total / self.count

    # region -------------------------------------------------------------------------------------------------------

    def set_region(self, weights: torch.Tensor, classes: Sequence[int], contrast: int | None = None) -> None:
        """Fix the region weights ``(B, n, *spatial)`` and classes (and a contrast class ``c2``: the scores are then
        of ``t_c - t_c2``); find the windows that touch the region and their clean contributions to the score."""
        self.weights = F.pad(weights, self.grid.pad) if any(self.grid.pad) else weights
        self.classes = tuple(classes)
        self.contrast = contrast
        self.relevant = [u for u in self.units if bool(self.weights[self.index(u)].any())]
        if self.target == CAMTarget.PROBABILITIES:
            if self.stitched is None:
                self.stitched = self.stitch(self.relevant)
        else:
            outputs = self.clean_outputs(self.relevant)
            self.clean_scores = {u: self.window_scores([u], logits[None])[0] for u, logits in outputs}

    def window_scores(self, units: list[tuple[int, int]], logits: torch.Tensor) -> torch.Tensor:
        """``<W beta_w, f_w^c>`` per window and class ``(G, n)``: the windows' shares of the logits region score."""
        picked = logits[:, list(self.classes)].flatten(2)
        if self.contrast is not None:
            picked = picked - logits[:, self.contrast : self.contrast + 1].flatten(2)
        scores = [(self.weighted_region(u).to(logits.device).flatten(1) * picked[j]).sum(-1) for j, u in enumerate(units)]
        return torch.stack(scores).to(self.device)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """The explained classes' scores from logits ``(K, *s)``: logits, softmax or sigmoid probabilities (minus the
        contrast class's)."""
        picked = list(self.classes) + ([] if self.contrast is None else [self.contrast])
        if self.target != CAMTarget.PROBABILITIES:
            values = logits[picked]
        elif self.multi_label:
            values = torch.sigmoid(logits[picked])
        else:
            values = torch.softmax(logits, dim=0)[picked]
        return values if self.contrast is None else values[:-1] - values[-1:]

    def region_score(self) -> torch.Tensor:
        """The clean region score ``S(x)`` ``(B, n)``."""
        batch = self.padded.shape[0]
        if self.target != CAMTarget.PROBABILITIES or not self.relevant:
            score = self.padded.new_zeros((batch, len(self.classes)))
            for (b, _), value in self.clean_scores.items():
                score[b] += value
            return score
        stitched = self.stitched
        assert stitched is not None  # set_region stitches the clean prediction for probabilities
        values = [(self.weights[b] * self.activation(stitched[b])).flatten(1).sum(1) for b in range(batch)]
        return torch.stack(values)

    # perturbations ------------------------------------------------------------------------------------------------

    def perturb(self, out: torch.Tensor, perturbation: Perturbation, unit: tuple[int, int], base: torch.Tensor) -> None:
        """Write one window of the perturbed image into ``out`` ``(C, *roi)``: the clean window with the footprint of
        the perturbed channels set to ``base`` (a box copied directly, mirrored copies in padding through a mask)."""
        index, window = self.index(unit), self.grid.slices[unit[1]]
        out.copy_(self.padded[index][0])
        channels = range(out.shape[0]) if perturbation.channels is None else perturbation.channels
        lines = [a[s].nonzero()[:, 0].tolist() for a, s in zip(perturbation.axes, window)]
        if all(line[-1] - line[0] + 1 == len(line) for line in lines):  # a box
            box = tuple(slice(line[0], line[-1] + 1) for line in lines)
            for c in channels:
                out[window_index(box, c)] = base[index][window_index(box, 0, c)]
            return
        mask = footprint_mask(perturbation.axes, window)
        assert mask is not None  # only windows the perturbation touches are perturbed
        mask = mask.to(self.device)
        for c in channels:
            out[c] = torch.where(mask, base[index][0, c], out[c])

    def touches(self, perturbation: Perturbation, unit: tuple[int, int]) -> bool:
        return all(bool(a[s].any()) for a, s in zip(perturbation.axes, self.grid.slices[unit[1]]))

    def drops(self, perturbations: list[Perturbation], base: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``S(x) - S(x_p)`` per perturbation and class ``(P, n)``; ``base`` is the padded baseline image.

        Only the windows that both see the perturbation and touch the region run, ``batch_size`` at a time (windows
        of several perturbations share a batch).
        """
        work = [
            (p, u) for p, pert in enumerate(perturbations) for u in self.relevant
            if u[0] == pert.item and self.touches(pert, u)
        ]  # fmt: skip
        drops = base.new_zeros((len(perturbations), len(self.classes)))
        remaining = Counter(p for p, _ in work)
        pending: dict[int, list[tuple[tuple[int, int], torch.Tensor]]] = {}
        groups = _chunks(work, batch_size)
        if self.progress and has_tqdm and groups:
            groups = tqdm(groups, desc="perturbed windows", unit="batch")
        roi = self.grid.importance.shape[2:]
        for group in groups:
            windows = base.new_empty((len(group), base.shape[1], *roi))
            for j, (p, unit) in enumerate(group):
                self.perturb(windows[j], perturbations[p], unit, base)
            with torch.no_grad():
                out = self.forward(windows)
            if self.target != CAMTarget.PROBABILITIES:
                scores = self.window_scores([u for _, u in group], out)
                for j, (p, unit) in enumerate(group):
                    drops[p] += self.clean_scores[unit] - scores[j]
                continue
            for j, (p, unit) in enumerate(group):
                pending.setdefault(p, []).append((unit, out[j].to(self.device)))
                remaining[p] -= 1
                if remaining[p] == 0:
                    drops[p] = self.probability_drop(perturbations[p].item, pending.pop(p))
        return drops

    def probability_drop(self, item: int, outputs: list[tuple[tuple[int, int], torch.Tensor]]) -> torch.Tensor:
        """``S(x) - S(x_p)`` ``(n,)`` of probabilities: ``Y`` re-stitched on the box covering the changed windows."""
        windows = [self.grid.slices[k] for (_, k), _ in outputs]
        starts = [min(w[d].start for w in windows) for d in range(len(windows[0]))]
        box = tuple(slice(lo, max(w[d].stop for w in windows)) for d, lo in enumerate(starts))
        assert self.stitched is not None  # set_region stitches the clean prediction for probabilities
        clean = self.stitched[window_index(box, item, slice(None))]
        changed = clean.clone()
        with torch.no_grad():
            for (unit, logits), window in zip(outputs, windows):
                local = (slice(None), *(slice(s.start - lo, s.stop - lo) for s, lo in zip(window, starts)))
                changed[local] += self.beta(unit[1]).to(self.device) * (logits - self.clean(unit))
            weights = self.weights[window_index(box, item, slice(None))]
            return (weights * (self.activation(clean) - self.activation(changed))).flatten(1).sum(1)

    # gradients ----------------------------------------------------------------------------------------------------

    def gradient(self, image: torch.Tensor) -> torch.Tensor:
        """``dS/dx`` ``(B, n, C, *spatial)`` of the stitched region score at ``image`` (region fixed), exactly: one
        vector-Jacobian product per window touching the region, with cotangent ``T * beta_w``."""
        leaf = image.detach().requires_grad_(True)
        with torch.enable_grad():
            padded = self.grid.pad_image(leaf)
        source = padded.detach()
        stitched = None
        if self.target == CAMTarget.PROBABILITIES:
            with torch.no_grad():
                stitched = self.stitch(self.relevant, source)
        grads = source.new_zeros((source.shape[0], len(self.classes), *source.shape[1:]))
        for group in _chunks(self.relevant, self.sw_batch_size):
            windows = torch.cat([source[self.index(u)] for u in group]).to(self.sw_device).requires_grad_(True)
            with torch.enable_grad():
                out = self.forward(windows)
            todo = [i for i in range(len(self.classes)) if any(self.weights[self.index(u)][:, i].any() for u in group)]
            for i in todo:
                parts = [self.cotangent(u, i, out[j : j + 1].detach(), stitched) for j, u in enumerate(group)]
                cotangent = torch.cat(parts)
                (grad,) = torch.autograd.grad(out, windows, cotangent, retain_graph=i != todo[-1])
                for j, (b, k) in enumerate(group):
                    grads[window_index(self.grid.slices[k], b, i, slice(None))] += grad[j].to(self.device)
        if not any(self.grid.pad):
            return grads
        pulled = [torch.autograd.grad(padded, leaf, grads[:, i], retain_graph=True)[0] for i in range(grads.shape[1])]
        return torch.stack(pulled, dim=1)

    def cotangent(self, unit, i: int, logits: torch.Tensor, stitched: torch.Tensor | None) -> torch.Tensor:
        """``T * beta_w`` on one window ``(1, K, *roi)`` for class ``i``."""
        index = self.index(unit)
        weights = self.weights[(index[0], slice(i, i + 1), *index[2:])].to(logits.device)
        source = logits if stitched is None else stitched[index].to(logits.device)
        beta = self.beta(unit[1]).to(logits.device)
        return region_cotangent(source, weights * beta, self.classes[i], self.target, self.multi_label, self.contrast)
