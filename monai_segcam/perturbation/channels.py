# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Which input channel (MRI sequence, CT phase) drove a segmentation: :py:class:`ChannelAttribution`.

Three measures per channel of the region score ``S`` of the stitched prediction (see
:py:mod:`monai_segcam.perturbation.scoring`), with the region fixed from the clean prediction:

- ``drop``: ``S(x) - S(x_j)``, the channel alone replaced by its baseline (windows re-run only where they touch the
  region);
- ``input_x_gradient``: ``x * dS/dx``, per voxel, summed per channel for the table;
- ``integrated_gradients``: ``(x - x0) * mean_k dS/dx(x0 + a_k (x - x0))`` with ``a_k = (k + 1/2) / steps``
  (midpoint rule; Sundararajan et al. 2017), per voxel, summed per channel. Its sum over channels and voxels
  approaches ``S(x) - S(x0)`` (completeness), exactly for networks that are linear in the input.

The gradients are exact through the stitched sliding window: per window a vector-Jacobian product with cotangent
``T * beta_w`` (``DESIGN.md``), pulled back through MONAI's padding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.utils import StrEnum, ensure_tuple, look_up_option

from ..utils.baselines import make_baseline
from .base import Prepared, StitchedExplainer
from .scoring import Perturbation
from .windows import box_footprint

__all__ = [
    "ChannelMethod",
    "ChannelAttribution",
    "ChannelAttributionResult",
    "CHANNEL_COLUMNS",
    "channel_names",
]

CHANNEL_COLUMNS = ("case", "class", "channel", "channel_name", "drop", "input_x_gradient", "integrated_gradients")


class ChannelMethod(StrEnum):
    """The channel measures of :py:class:`ChannelAttribution`."""

    DROP = "drop"
    INPUT_X_GRADIENT = "input_x_gradient"
    INTEGRATED_GRADIENTS = "integrated_gradients"


@dataclass
class ChannelAttributionResult:
    """The channel attributions of one call.

    Attributes:
        classes: the explained classes, in the order of dimension 1.
        scores: per measure (:py:class:`ChannelMethod` values), channel importances ``(B, n_classes, C)``.
        maps: per gradient measure, maps ``(B, n_classes, C, *spatial)`` on the image grid.
        score: the clean region score ``S(x)`` ``(B, n_classes)``.
        region: the region weights ``(B, n_classes, *spatial)``.

    Example:
        .. code-block:: python

            result = ChannelAttribution(net)(image, classes=1)
            result.ranking("drop")[0, 0]  # channel indices, most important first
    """

    classes: tuple[int, ...]
    scores: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    score: torch.Tensor
    region: torch.Tensor

    def ranking(self, method: str = ChannelMethod.DROP) -> torch.Tensor:
        """Channel indices ``(B, n_classes, C)`` by decreasing importance under ``method``."""
        method = look_up_option(method, ChannelMethod)
        if method not in self.scores:
            raise KeyError(f"{method!r} was not computed; this result has {list(self.scores)}.")
        return torch.argsort(self.scores[method], dim=-1, descending=True, stable=True)

    def rows(self, cases: Sequence[str] | None = None, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per case, class and channel, with the columns of :py:data:`CHANNEL_COLUMNS` (measures that were
        not computed are empty).

        Args:
            cases: the case names of the batch items (default ``case0``, ``case1``...).
            names: the channel names (default: see :py:func:`channel_names`).
        """
        batch, _, channels = next(iter(self.scores.values())).shape
        cases = [f"case{b}" for b in range(batch)] if cases is None else list(cases)
        names = channel_names(names, channels)
        if len(cases) != batch:
            raise ValueError(f"{len(cases)} case names for a batch of {batch}.")
        rows = []
        for b in range(batch):
            for i, c in enumerate(self.classes):
                for j in range(channels):
                    row: dict[str, Any] = {"case": cases[b], "class": c, "channel": j, "channel_name": names[j]}
                    for method in ChannelMethod:
                        row[str(method)] = float(self.scores[method][b, i, j]) if method in self.scores else ""
                    rows.append(row)
        return rows


class ChannelAttribution(StitchedExplainer[ChannelAttributionResult]):
    """Importance of each input channel for a region score of the stitched prediction.

    Args:
        network: the segmentation network.
        roi_size: the window size; ``None`` explains whole volumes.
        methods: the measures to compute (see :py:class:`ChannelMethod`); default all three.
        baseline: the channel baseline of ``drop`` and ``integrated_gradients``: a number, ``"mean"`` or ``"blur"``.
        blur_sigma: the Gaussian sigma (voxels) of the ``"blur"`` baseline.
        steps: integration steps of ``integrated_gradients`` (each costs a forward and a backward pass of the
            windows touching the region, plus a forward pass for ``"probabilities"``).
        batch_size: windows per forward pass of the channel-drop passes.
        window_kwargs: sliding-window and target settings, see
            :py:class:`~monai_segcam.perturbation.base.StitchedExplainer`.

    Example:
        .. code-block:: python

            attribution = ChannelAttribution.from_inferer(inferer, net, steps=32, baseline=0.0)
            result = attribution(image, classes=[1, 2])  # image: (B, 4, *spatial), e.g. T1, T1c, T2, FLAIR
            rows = result.rows(["case1"], ["T1", "T1c", "T2", "FLAIR"])  # outputs.write_channel_table writes them
    """

    def __init__(
        self,
        network: torch.nn.Module,
        roi_size: Sequence[int] | int | None = None,
        methods: Sequence[str] | str = tuple(ChannelMethod),
        baseline: float | str = 0.0,
        blur_sigma: float = 5.0,
        steps: int = 16,
        batch_size: int = 8,
        **window_kwargs: Any,
    ) -> None:
        super().__init__(network, roi_size, **window_kwargs)
        self.methods = tuple(look_up_option(m, ChannelMethod) for m in ensure_tuple(methods))
        if not self.methods:
            raise ValueError(f"methods is empty: choose from {[str(m) for m in ChannelMethod]}.")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive integers, got {steps} and {batch_size}.")
        make_baseline(torch.zeros(1, 1, 1), baseline, blur_sigma)  # checks the baseline
        self.baseline, self.blur_sigma, self.steps, self.batch_size = baseline, blur_sigma, steps, batch_size

    @property
    def method_name(self) -> str:
        """``"channels"``: importances per input channel."""
        return "channels"

    def _explain(self, state: Prepared) -> ChannelAttributionResult:
        """Channel importances of the prepared call (the gradient measures enable autograd for their passes)."""
        x, scorer = state.x, state.scorer
        base = make_baseline(x, self.baseline, self.blur_sigma)
        scores, maps = {}, {}
        if ChannelMethod.DROP in self.methods:
            whole = box_footprint(tuple(slice(None) for _ in x.shape[2:]), scorer.grid)
            drops = [Perturbation(b, whole, [j]) for b in range(x.shape[0]) for j in range(x.shape[1])]
            values = scorer.drops(drops, scorer.grid.pad_image(base), self.batch_size)  # (B * C, n)
            scores[ChannelMethod.DROP] = values.view(x.shape[0], x.shape[1], -1).transpose(1, 2)
        if ChannelMethod.INPUT_X_GRADIENT in self.methods:
            maps[ChannelMethod.INPUT_X_GRADIENT] = x[:, None] * scorer.gradient(x)
        if ChannelMethod.INTEGRATED_GRADIENTS in self.methods:
            total = sum(scorer.gradient(base + (k + 0.5) / self.steps * (x - base)) for k in range(self.steps))
            maps[ChannelMethod.INTEGRATED_GRADIENTS] = (x - base)[:, None] * total / self.steps
        for method, value in maps.items():
            scores[method] = value.flatten(3).sum(-1)
        out = state.image.device
        return ChannelAttributionResult(
            state.classes,
            {k: v.to(out) for k, v in scores.items()},
            {k: v.to(out) for k, v in maps.items()},
            scorer.region_score().to(out),
            state.weights.to(out),
        )


def _from_metadata(metadata: Mapping[str, Any], key: str) -> dict[int, str]:
    inputs = metadata.get("network_data_format", {}).get("inputs", {})
    channel_def = inputs.get(key, {}).get("channel_def", {})
    return {int(k): str(v) for k, v in channel_def.items() if str(k).isdigit()}


def channel_names(
    source: Sequence[str] | Mapping[Any, Any] | str | os.PathLike | None, num_channels: int, key: str = "image"
) -> list[str]:
    """The names of ``num_channels`` input channels.

    Args:
        source: a list of names; a ``{index: name}`` mapping; a bundle's metadata dict (its
            ``network_data_format.inputs[key].channel_def``); a bundle folder (its ``configs/metadata.json``, if
            any) or a ``metadata.json`` path; or ``None``. Channels without a name are called ``channel<j>``.
        num_channels: the number of input channels.
        key: the input's key in the bundle metadata.

    Raises:
        ValueError: when a list has another length than ``num_channels``.

    Example:
        .. code-block:: python

            channel_names("bundles/brats_mri_segmentation", 4)  # e.g. ['T1c', 'T1', 'T2', 'FLAIR']
            channel_names(["T1", "T2"], 2), channel_names(None, 2)  # ['T1', 'T2'], ['channel0', 'channel1']
    """
    named: dict[int, str] = {}
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        path = os.path.join(path, "configs", "metadata.json") if os.path.isdir(path) else path
        if os.path.isfile(path) or not os.path.isdir(os.fspath(source)):  # a bundle without metadata: no names
            with open(path, encoding="utf-8") as stream:
                named = _from_metadata(json.load(stream), key)
    elif isinstance(source, Mapping):
        if "network_data_format" in source:
            named = _from_metadata(source, key)
        else:
            named = {int(k): str(v) for k, v in source.items()}
    elif source is not None:
        names = [str(name) for name in source]
        if len(names) != num_channels:
            raise ValueError(f"{len(names)} channel names {names} for {num_channels} input channels.")
        named = dict(enumerate(names))
    return [named.get(j, f"channel{j}") for j in range(num_channels)]
