# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Score-CAM for segmentation (Wang et al. 2020): channel weights from the region scores of masked inputs.

For each channel ``k`` of the layer, the mask is the channel's activation upsampled to the image (with sliding
windows: blended over the windows like the prediction) and min-max normalised over the image; the channel's score
is the region's score (logits or probabilities) of the prediction of the input multiplied by the mask: its mean
over the region (``score_reduction="mean"``) or its sum (``"sum"``, as pytorch-grad-cam's segmentation target and
torchcam score). The weights are the softmax of the scores over channels; the map is ``sum_k w_k A^k`` like any
global-weight rule. The mean keeps the scores at the scale of one voxel's logit, so on 3D segmentation networks the
softmax weights are nearly uniform and the map nearly the class-agnostic channel mean; the sum (the default) scales
the score differences by the region's size, so the weights are nearly one-hot on the channels whose masks keep the
region's score (``docs/planted_evidence.md`` measures both).
The engine provides the masks and the masked predictions (a sliding-window engine runs only the windows that touch
the region); this module holds the algorithm, once for every engine.

With an ensemble and test-time flips, each member has its own channels: a channel's mask is its activation averaged
over the member's flips (each flipped back), its score the region score of the explained prediction (the mean over
members and flips) of the masked input, and the weights a softmax over the member's channels.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import look_up_option

from .methods import CAMRule, register_method

__all__ = ["ScoreCAMRule"]


@register_method("scorecam")
class ScoreCAMRule(CAMRule):
    """Score-CAM: gradient-free channel weights from masked predictions, ``batch_size`` channels at a time.

    The engine passes a *source* with ``channels`` (layer -> channel count per member), ``blended_activations(layer,
    channels, member)`` (the member's channels on the image grid, ``(B, k, *grid)``), ``crop`` (the image inside that
    grid) and ``masked_scores(masks, reduction)`` (the region's mean or summed score ``(B, k, n_classes)`` of the
    input times each mask).

    Args:
        score_reduction: ``"sum"`` (default) or ``"mean"``: how a masked prediction's scores over the region make
            the channel's score (the softmax over channels then gives the weights). The sum won the planted-evidence
            benchmark narrowly (docs/planted_evidence.md, "Option variants") and is what pytorch-grad-cam's
            segmentation target and torchcam score.

    Example:
        .. code-block:: python

            maps = SlidingWindowSegCAM(net, roi_size=96, layers="bottleneck", method="scorecam")(image, classes=1)
            mean = SegCAM(net, layers="bottleneck", method="scorecam", score_reduction="mean")(image, classes=1)
    """

    needs_gradients = False

    def __init__(self, score_reduction: str = "sum") -> None:
        self.score_reduction = look_up_option(score_reduction, ("mean", "sum"))

    def collect_statistics(self, source: Any) -> dict[tuple[str, int, int], tuple[torch.Tensor, ...]]:
        stats: dict[tuple[str, int, int], tuple[torch.Tensor, ...]] = {}
        for key, per_member in source.channels.items():
            for member, num_channels in enumerate(per_member):
                channel_scores = self._channel_scores(source, key, member, num_channels)  # (B, K, n)
                for i in range(channel_scores.shape[-1]):
                    stats[(key, i, member)] = (channel_scores[..., i],)
        return stats

    def _channel_scores(self, source: Any, key: str, member: int, num_channels: int) -> torch.Tensor:
        """The region's scores ``(B, K, n_classes)`` of the input masked by each channel of ``member``."""
        scores = []
        starts = range(0, num_channels, source.scorecam_batch_size)
        for start in source.progress(starts, f"Score-CAM ({key}{f', member {member}' if member else ''})"):
            blended = source.blended_activations(key, slice(start, start + source.scorecam_batch_size), member)
            inside = blended[source.crop].flatten(2)
            low, high = inside.min(-1).values, inside.max(-1).values
            shape = (*low.shape, *[1] * (blended.ndim - 2))
            masks = (blended - low.view(shape)) / (high - low).clamp_min(1e-12).view(shape)
            scores.append(source.masked_scores(masks, self.score_reduction))
        return torch.cat(scores, dim=1)

    def weights(self, stats, num_positions):
        return torch.softmax(stats[0], dim=1), None
