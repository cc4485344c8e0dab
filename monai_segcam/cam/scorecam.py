# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Score-CAM for segmentation (Wang et al. 2020): channel weights from the region scores of masked inputs.

For each channel ``k`` of the layer, the mask is the channel's activation upsampled to the image (with sliding
windows: blended over the windows like the prediction) and min-max normalised over the image; the channel's score
is the region's mean score (logits or probabilities) of the prediction of the input multiplied by the mask. The
weights are the softmax of the scores over channels; the map is ``sum_k w_k A^k`` like any global-weight rule.
The engine provides the masks and the masked predictions (a sliding-window engine runs only the windows that touch
the region); this module holds the algorithm, once for every engine.
"""

from __future__ import annotations

from typing import Any

import torch

from .methods import CAMRule, register_method

__all__ = ["ScoreCAMRule"]


@register_method("scorecam")
class ScoreCAMRule(CAMRule):
    """Score-CAM: gradient-free channel weights from masked predictions, ``batch_size`` channels at a time.

    The engine passes a *source* with ``channels`` (layer -> channel count), ``blended_activations(layer,
    channels)`` (the channels on the image grid, ``(B, k, *grid)``), ``crop`` (the image inside that grid) and
    ``masked_scores(masks)`` (the region's mean score ``(B, k, n_classes)`` of the input times each mask).

    Example:
        .. code-block:: python

            maps = SlidingWindowSegCAM(net, roi_size=96, layers="bottleneck", method="scorecam")(image, classes=1)
    """

    needs_gradients = False

    def collect_statistics(self, source: Any) -> dict[tuple[str, int, int], tuple[torch.Tensor, ...]]:
        if source.num_terms != 1:
            raise NotImplementedError("Score-CAM of an ensemble or with test-time flips is not supported.")
        stats: dict[tuple[str, int, int], tuple[torch.Tensor, ...]] = {}
        for key, num_channels in source.channels.items():
            scores = []
            for start in source.progress(range(0, num_channels, source.scorecam_batch_size), f"Score-CAM ({key})"):
                blended = source.blended_activations(key, slice(start, start + source.scorecam_batch_size))
                inside = blended[source.crop].flatten(2)
                low, high = inside.min(-1).values, inside.max(-1).values
                shape = (*low.shape, *[1] * (blended.ndim - 2))
                masks = (blended - low.view(shape)) / (high - low).clamp_min(1e-12).view(shape)
                scores.append(source.masked_scores(masks))
            channel_scores = torch.cat(scores, dim=1)  # (B, K, n)
            for i in range(channel_scores.shape[-1]):
                stats[(key, i, 0)] = (channel_scores[..., i],)
        return stats

    def weights(self, stats, num_positions):
        return torch.softmax(stats[0], dim=1), None
