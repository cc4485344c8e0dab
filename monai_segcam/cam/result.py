# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What every engine returns: :py:class:`CAMResult`, the maps per layer with the region and prediction they explain."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from monai.data import MetaTensor

__all__ = ["CAMResult", "as_image_map"]


@dataclass
class CAMResult(Mapping):
    """The maps of one engine call, always per layer, with what they explain.

    It is a read-only mapping ``{layer: MetaTensor (B, n_classes, *spatial)}`` (the maps on the input's voxel grid,
    carrying the input's metadata), so ``result["pre_head"]``, ``dict(result)`` and ``for layer, cam in
    result.items()`` work; :py:attr:`map` is the map of a single-layer call.

    Attributes:
        maps: raw maps per layer key (after ReLU when the engine applies it; never normalised).
        classes: the explained class indices, in the order of the maps' channels.
        method: the method's name (e.g. ``"hirescam"``, ``"occlusion"``).
        region: the region weights used per class ``(B, n_classes, *spatial)`` on the input grid (1 inside M).
        prediction: what the region was built from, on the input grid: stitched logits ``(B, C, *spatial)``, a
            label map ``(B, 1, *spatial)``, or ``None`` when the region needed no prediction.
        modules: the ``named_modules()`` name behind each layer key (``{}`` for methods without layers).
        channels: per-channel maps ``(B, n_classes, C, *spatial)`` of input attributions (which input channel, e.g.
            MRI sequence, carried the evidence; they sum over ``C`` to the map before ReLU), per layer key.

    Example:
        .. code-block:: python

            result = SegCAM(net, layers=["bottleneck", "pre_head"])(image, classes=[1, 2])
            result["pre_head"].shape  # (B, 2, *spatial)
            result.region.sum()  # voxels explained
            SegCAM(net, layers="pre_head")(image).map  # the single layer's map
    """

    maps: dict[str, MetaTensor]
    classes: tuple[int, ...]
    method: str
    region: torch.Tensor
    prediction: torch.Tensor | None = None
    modules: dict[str, str] = field(default_factory=dict)
    channels: dict[str, MetaTensor] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> MetaTensor:
        try:
            return self.maps[layer]
        except KeyError:
            raise KeyError(f"No map for layer {layer!r}; this result has {list(self.maps)}.") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def layers(self) -> list[str]:
        """The layer keys, in the order they were requested."""
        return list(self.maps)

    @property
    def map(self) -> MetaTensor:
        """The map of a single-layer result; raises when there are several layers."""
        if len(self.maps) != 1:
            raise ValueError(f"This result has {len(self.maps)} layers {self.layers}: index it by layer.")
        return next(iter(self.maps.values()))


def as_image_map(value: torch.Tensor, image: torch.Tensor) -> MetaTensor:
    """A map on the image's grid as a ``MetaTensor`` carrying the image's metadata (affine, applied operations) when
    the image is a ``MetaTensor``.

    Example:
        .. code-block:: python

            cam = as_image_map(raw.relu(), image)  # saved and inverted like the image
    """
    out = MetaTensor(value.as_tensor() if isinstance(value, MetaTensor) else value)
    return out.copy_meta_from(image) if isinstance(image, MetaTensor) else out
