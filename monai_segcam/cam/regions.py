# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The explained region M, per class, and the cotangent it puts on the network output.

Every region kind builds *region weights* ``W`` of shape ``(B, n_classes, *spatial)`` (one channel per requested
class, 1 inside M, 0 outside, soft values allowed). The explained score of class ``c`` is
``S_c = sum_v W_c(v) t_c(v)`` with ``t`` the logits (default) or the probabilities (softmax, or sigmoid for
multi-label networks). :py:func:`region_cotangent` turns ``W_c`` into the cotangent on the *logits*
``T = dS_c/dlogits``, so every engine differentiates the logits with ``autograd.grad(logits, acts, T)``.

Regions are given as strings (``"pred"``, ``"all"``, ``"empty"``, ``"label"``, ``"fp"``, ``"fn"``,
``"component[:N]"``, ``"voxel:I,J,K"``, ``"box:I0,J0,K0:I1,J1,K1"``: :py:func:`parse_region`), as masks (a tensor
``(B, 1, *spatial)`` for every class or ``(B, n, *spatial)`` with one channel per requested class or per network
output channel), or as :py:class:`Region` objects (:py:class:`Voxel`, :py:class:`Box`, :py:class:`Component`, ...).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import look_up_option, optional_import

from ..utils.enums import RegionKind
from .engine import all_finite

ndimage, _ = optional_import("scipy.ndimage")

LABEL_REGIONS = ("label", "fp", "fn")  # the region kinds that need the ground truth
_REGION_FORMS = "component:N, voxel:I,J,K or box:I0,J0,K0:I1,J1,K1"

__all__ = [
    "Region",
    "PredictedRegion",
    "WholeRegion",
    "EmptyRegion",
    "MaskRegion",
    "LabelRegion",
    "FalsePositiveRegion",
    "FalseNegativeRegion",
    "Voxel",
    "Box",
    "Component",
    "class_masks",
    "region_source",
    "LABEL_REGIONS",
    "parse_region",
    "as_region",
    "region_weights",
    "warn_empty_regions",
    "region_cotangent",
]


def class_masks(logits: torch.Tensor, classes: Sequence[int], multi_label: bool = False) -> torch.Tensor:
    """Boolean masks ``(B, len(classes), *spatial)`` of the voxels predicted as each class.

    ``argmax == c`` with argmax's tie rule (the first maximal channel wins), computed with pairwise comparisons: an
    ``argmax`` over the channel dimension of a channel-first tensor costs more than the forward pass on CPU.
    Multi-label networks predict class ``c`` where its logit is positive (sigmoid > 0.5).

    Args:
        logits: network output ``(B, C, *spatial)``, or a discrete label map ``(B, 1, *spatial)`` (any dtype, e.g.
            the float output of ``AsDiscrete(argmax=True)``; with ``multi_label`` a single channel is a logit).
        classes: the class indices.
        multi_label: sigmoid outputs, one independent class per channel.

    Example:
        .. code-block:: python

            liver, kidney = class_masks(logits, [1, 2]).unbind(1)
    """
    if logits.shape[1] == 1 and not multi_label:
        return torch.cat([logits == c for c in classes], dim=1)
    if logits.dtype == torch.bool:
        return logits[:, list(classes)]
    if multi_label:
        return logits[:, list(classes)] > 0
    masks = []
    for c in classes:
        own = logits[:, c]
        mask = torch.ones_like(own, dtype=torch.bool)
        for j in range(logits.shape[1]):
            if j != c:
                mask &= own > logits[:, j] if j < c else own >= logits[:, j]
        masks.append(mask)
    return torch.stack(masks, dim=1)


def region_source(pred: torch.Tensor | None, multi_label: bool = False) -> torch.Tensor | None:
    """The prediction as the CAM engines read it for regions (the transforms' and the inferer's ``pred``): logits
    ``(B, C, *spatial)`` as they are, and a single-channel floating-point label map (e.g. from
    ``AsDiscreted(argmax=True)``) as an integer label map.

    A single-channel floating-point ``pred`` of a ``multi_label`` network is its logits and is kept as it is.

    Example:
        .. code-block:: python

            region_source(torch.tensor([[[0.0, 2.0]]]))  # tensor([[[0, 2]]]): a label map
    """
    if pred is None:
        return None
    pred = pred.as_tensor() if isinstance(pred, MetaTensor) else torch.as_tensor(pred)
    pred = pred.detach()
    if pred.shape[1] == 1 and pred.is_floating_point() and not multi_label:
        return pred.round().long()
    return pred


def _label_masks(label: torch.Tensor | None, classes: Sequence[int]) -> torch.Tensor:
    if label is None:
        raise ValueError("This region needs the ground truth: pass `label=` (a label map (B, 1, *spatial) or one-hot).")
    if label.shape[1] == 1:
        return torch.cat([label == c for c in classes], dim=1)
    if max(classes) >= label.shape[1]:
        raise ValueError(f"One-hot label has {label.shape[1]} channels; classes {list(classes)} do not all fit.")
    return label[:, list(classes)] > 0.5


class Region:
    """A region kind: ``weights(logits, classes, ...)`` returns the region weights ``(B, len(classes), *spatial)``.

    Example:
        .. code-block:: python

            class Sphere(Region):  # a user-defined region, the same for every class
                needs_prediction = False

                def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
                    grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in spatial_shape], indexing="ij"))
                    inside = ((grid - torch.tensor([40, 40, 20]).view(-1, 1, 1, 1)) ** 2).sum(0) <= 8**2
                    return inside.expand(batch_size, len(classes), *spatial_shape)
    """

    needs_prediction: bool = True
    voxelwise: bool = False
    """The weight of a voxel depends only on the prediction (and label) at that voxel: a sliding-window CAM then
    sets the region of a window as soon as the stitched prediction over it is final (one pass over the windows)."""

    def weights(
        self,
        logits: torch.Tensor | None,
        classes: Sequence[int],
        spatial_shape: Sequence[int],
        batch_size: int,
        label: torch.Tensor | None = None,
        multi_label: bool = False,
    ) -> torch.Tensor:
        """The region weights; ``logits`` is the (stitched) prediction, ``None`` when ``needs_prediction`` is False."""
        raise NotImplementedError


class PredictedRegion(Region):
    """The voxels predicted as the class (the default, ``"pred"``).

    Example:
        .. code-block:: python

            cam(image, classes=1, region="pred")  # or region=PredictedRegion(), or pred=an_existing_prediction
    """

    voxelwise = True

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        return class_masks(logits, classes, multi_label)


class _FilledRegion(Region):
    """Every voxel (``inside = True``) or none, for every class."""

    needs_prediction = False
    inside = True

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        return torch.full((batch_size, len(classes), *spatial_shape), self.inside, dtype=torch.bool)


class WholeRegion(_FilledRegion):
    """Every voxel (``"all"``): the score of the whole class channel.

    Example:
        .. code-block:: python

            cam(image, classes=1, region="all")
    """


class EmptyRegion(_FilledRegion):
    """No voxel (``"empty"``): the sanity check, giving a zero map (and a warning).

    Example:
        .. code-block:: python

            assert cam(image, classes=1, region="empty").sum() == 0
    """

    inside = False


class LabelRegion(Region):
    """The ground-truth voxels of the class (``"label"``; pass ``label=``).

    Example:
        .. code-block:: python

            cam(image, classes=2, region="label", label=label_map)  # label_map: (B, 1, *spatial) or one-hot
    """

    needs_prediction = False

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        return _label_masks(label, classes)


class FalsePositiveRegion(Region):
    """Predicted as the class but not labelled so (``"fp"``; pass ``label=``): where the model was wrong.

    Example:
        .. code-block:: python

            cam(image, classes=2, region="fp", label=label_map)
    """

    voxelwise = True

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        return class_masks(logits, classes, multi_label) & ~_label_masks(label, classes)


class FalseNegativeRegion(Region):
    """Labelled as the class but not predicted so (``"fn"``; pass ``label=``): what the model missed.

    Example:
        .. code-block:: python

            cam(image, classes=2, region="fn", label=label_map)
    """

    voxelwise = True

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        return _label_masks(label, classes) & ~class_masks(logits, classes, multi_label)


@dataclass
class MaskRegion(Region):
    """A user mask: ``(B or 1, 1, *spatial)`` for every class, or one channel per requested class, or one channel per
    network output channel (then channel ``c`` is used for class ``c``)."""

    mask: torch.Tensor
    needs_prediction = False

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        mask = torch.as_tensor(self.mask)
        if mask.ndim != len(spatial_shape) + 2 or tuple(mask.shape[2:]) != tuple(spatial_shape):
            raise ValueError(
                f"Region mask shape {tuple(mask.shape)} does not match the output (B, n, *{tuple(spatial_shape)})."
            )
        if mask.shape[0] not in (1, batch_size):
            raise ValueError(f"Region mask batch size {mask.shape[0]} does not match the image batch {batch_size}.")
        num_outputs = logits.shape[1] if logits is not None else None
        if mask.shape[1] == 1:
            mask = mask.expand(-1, len(classes), *spatial_shape)
        elif num_outputs is not None and mask.shape[1] == num_outputs:
            mask = mask[:, list(classes)]
        elif mask.shape[1] != len(classes):
            raise ValueError(
                f"Region mask has {mask.shape[1]} channels; expected 1, one per requested class ({len(classes)})"
                f"{'' if num_outputs is None else f' or one per output channel ({num_outputs})'}."
            )
        mask = mask.float() if mask.dtype == torch.bool else mask
        return mask.expand(batch_size, *mask.shape[1:])


@dataclass
class Voxel(Region):
    """A single voxel ``(i, j, k)`` (in the image's voxel grid), the same for every class and batch item.

    Example:
        .. code-block:: python

            cam(image, classes=1, region=Voxel((40, 52, 30)))
    """

    index: Sequence[int]
    needs_prediction = False

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        index = tuple(int(i) for i in self.index)
        if len(index) != len(spatial_shape) or any(not 0 <= i < s for i, s in zip(index, spatial_shape)):
            raise ValueError(f"Voxel {index} lies outside the image grid {tuple(spatial_shape)}.")
        region = torch.zeros((batch_size, len(classes), *spatial_shape), dtype=torch.bool)
        region[(slice(None), slice(None), *index)] = True
        return region


@dataclass
class Box(Region):
    """A box ``start <= index < end`` (voxel indices), the same for every class and batch item.

    Args:
        start: first voxel of the box per spatial dimension.
        end: one past the last voxel per spatial dimension.
        within_prediction: keep only the voxels of the box that are predicted as the class (Seg-XRes-CAM's
            "class ∩ box").

    Example:
        .. code-block:: python

            cam(image, classes=2, region=Box((10, 20, 5), (40, 50, 30), within_prediction=True))
    """

    start: Sequence[int]
    end: Sequence[int]
    within_prediction: bool = False

    @property
    def needs_prediction(self) -> bool:  # type: ignore[override]
        return self.within_prediction

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        if len(self.start) != len(spatial_shape) or len(self.end) != len(spatial_shape):
            raise ValueError(f"Box {self.start}-{self.end} needs one start and end per spatial dimension.")
        region = torch.zeros((batch_size, len(classes), *spatial_shape), dtype=torch.bool)
        region[(slice(None), slice(None), *(slice(int(a), int(b)) for a, b in zip(self.start, self.end)))] = True
        if self.within_prediction:
            region &= class_masks(logits, classes, multi_label).to(region.device)
        return region


@dataclass
class Component(Region):
    """One connected component of the predicted class: the ``index``-th largest (0 = the largest).

    Explaining one object of a class that has several (two kidneys, several metastases) is where element-wise
    methods (HiRes, XRes, LayerCAM) localise and pooled-weight Seg-Grad-CAM smears (Hasany et al. 2023).

    Args:
        index: rank of the component by size (0 = largest). An image with fewer components gets an empty region.
        connectivity: ``1`` (faces), ``2`` (faces + edges) or ``3`` (faces + edges + corners in 3D).

    Example:
        .. code-block:: python

            left, right = (cam(image, classes=2, region=Component(index=i)) for i in (0, 1))
    """

    index: int = 0
    connectivity: int = 1

    def weights(self, logits, classes, spatial_shape, batch_size, label=None, multi_label=False):
        masks = class_masks(logits, classes, multi_label).cpu().numpy()
        structure = ndimage.generate_binary_structure(len(spatial_shape), self.connectivity)
        region = np.zeros_like(masks)
        for b in range(masks.shape[0]):
            for i in range(masks.shape[1]):
                labels, count = ndimage.label(masks[b, i], structure=structure)
                if count > self.index:
                    sizes = np.bincount(labels.ravel())[1:]
                    chosen = np.argsort(-sizes, kind="stable")[self.index] + 1
                    region[b, i] = labels == chosen
        return torch.from_numpy(region)


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(value) for value in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of voxel indices") from None


def parse_region(text: str) -> tuple[str, list[tuple[int, ...]]]:
    """Parse a region string into its kind and its voxel-index arguments (the region strings of every front door:
    :py:func:`as_region`, the handlers, transforms and inferer, and ``monai-segcam explain --region``).

    Kinds: ``pred``, ``all``, ``empty``, ``label``, ``fp``, ``fn``, ``component[:N]`` (the N-th largest component,
    0 = largest), ``voxel:I,J,K`` (one voxel) and ``box:I0,J0,K0:I1,J1,K1`` (two opposite corner voxels, both
    included); voxel indices are those of the image, in the order nibabel and MONAI read them.

    Raises:
        ValueError: an unknown kind or malformed indices.

    Example:
        >>> parse_region("box:4,5,3:10,12,8")
        ('box', [(4, 5, 3), (10, 12, 8)])
    """
    kind, *parts = text.split(":")
    if kind == "component" and len(parts) <= 1 and all(p.isdigit() for p in parts):
        return kind, [(int(parts[0]),)] if parts else []
    if kind in list(RegionKind) and kind != "component" and not parts:
        return kind, []
    if kind in ("voxel", "box") and len(parts) == (1 if kind == "voxel" else 2):
        points = [_indices(part) for part in parts]
        if any(len(point) != len(points[0]) for point in points):
            raise ValueError(f"{text!r}: both corners need the same number of indices")
        return kind, points
    kinds = ", ".join(kind.value for kind in RegionKind)
    raise ValueError(f"unknown region {text!r}: use one of {kinds}, or {_REGION_FORMS}")


def as_region(region: str | Region | torch.Tensor) -> Region:
    """Turn a region string (:py:func:`parse_region`), mask or :py:class:`Region` into a :py:class:`Region`.

    Example:
        .. code-block:: python

            assert isinstance(as_region("fp"), FalsePositiveRegion)
            assert as_region("box:4,5,3:10,12,8") == Box((4, 5, 3), (11, 13, 9))  # corners included
            weights = as_region(mask).weights(None, [1], mask.shape[2:], batch_size=1)  # a mask (B, 1, *spatial)
    """
    if isinstance(region, Region):
        return region
    if isinstance(region, (torch.Tensor, np.ndarray)):
        return MaskRegion(torch.as_tensor(region))
    if ":" in region:
        kind, points = parse_region(region)
        if kind == "component":
            return Component(index=points[0][0])
        if kind == "voxel":
            return Voxel(points[0])
        return Box(tuple(map(min, *points)), tuple(max(a, b) + 1 for a, b in zip(*points)))
    kind = look_up_option(region, RegionKind)
    return {
        RegionKind.PRED: PredictedRegion,
        RegionKind.ALL: WholeRegion,
        RegionKind.EMPTY: EmptyRegion,
        RegionKind.LABEL: LabelRegion,
        RegionKind.FALSE_POSITIVE: FalsePositiveRegion,
        RegionKind.FALSE_NEGATIVE: FalseNegativeRegion,
        RegionKind.COMPONENT: Component,
    }[kind]()


def region_weights(
    region: str | Region | torch.Tensor,
    logits: torch.Tensor | None,
    classes: Sequence[int],
    spatial_shape: Sequence[int],
    batch_size: int,
    label: torch.Tensor | None = None,
    multi_label: bool = False,
    device: torch.device | str | None = None,
    warn_empty: bool = True,
) -> torch.Tensor:
    """Float region weights ``(B, len(classes), *spatial)`` on ``device``, warning about empty regions.

    Example:
        .. code-block:: python

            weights = region_weights("pred", logits, classes=[1, 2], spatial_shape=logits.shape[2:], batch_size=1)
    """
    region = as_region(region)
    if label is not None:
        label = torch.as_tensor(label).to(logits.device if logits is not None else "cpu")
    weights = region.weights(logits, classes, spatial_shape, batch_size, label=label, multi_label=multi_label)
    weights = weights.to(device=device if device is not None else weights.device, dtype=torch.float32)
    if not all_finite(weights):
        raise ValueError("The region (mask) contains NaN or Inf values; region weights must be finite.")
    if warn_empty:
        warn_empty_regions(weights, classes, stacklevel=4)
    return weights


def warn_empty_regions(weights: torch.Tensor, classes: Sequence[int], stacklevel: int = 3) -> None:
    """Warn about the (batch item, class) pairs whose region weights ``(B, len(classes), *spatial)`` are all zero.

    Example:
        .. code-block:: python

            weights = region_weights("pred", logits, [1, 2], logits.shape[2:], batch_size=1, warn_empty=False)
            warn_empty_regions(weights, [1, 2])  # e.g. "Empty region for (batch item, class) [(0, 2)]: ..."
    """
    empty = ~weights.flatten(2).any(-1)
    if empty.any():
        pairs = [(b, classes[i]) for b, i in empty.nonzero().tolist()]
        warnings.warn(f"Empty region for (batch item, class) {pairs}: their maps are zero.", stacklevel=stacklevel)


def region_cotangent(
    logits: torch.Tensor,
    weights: torch.Tensor,
    class_index: int,
    target: str = "logits",
    multi_label: bool = False,
    contrast: int | None = None,
) -> torch.Tensor:
    """The cotangent ``dS/dlogits`` ``(B, C, *spatial)`` of the region score of one class (minus the score of
    ``contrast`` on the same region: ``T_c - T_c2``).

    Args:
        logits: the network's logits (detached), whole volume or one window.
        weights: the class's region weights ``(B, 1, *spatial)`` on the same grid.
        class_index: the explained class ``c``.
        target: ``"logits"`` (``S = sum W y_c``) or ``"probabilities"`` (``S = sum W p_c``, ``p`` softmax or
            sigmoid), the vector-Jacobian product through the activation computed in closed form.
        multi_label: sigmoid instead of softmax for ``"probabilities"``.
        contrast: a class ``c2``: the cotangent of ``S = sum W (t_c - t_c2)`` ("why c and not c2").

    Example:
        .. code-block:: python

            cotangent = region_cotangent(logits.detach(), weights[:, :1], class_index=1, target="probabilities")
            grads = torch.autograd.grad(logits, activations, cotangent)
    """
    if contrast is not None:
        own = region_cotangent(logits, weights, class_index, target, multi_label)
        return own - region_cotangent(logits, weights, contrast, target, multi_label)
    weights = weights.to(logits.dtype)
    cotangent = torch.zeros_like(logits)
    if target == "logits":
        cotangent[:, class_index : class_index + 1] = weights
    elif multi_label:
        prob = torch.sigmoid(logits[:, class_index : class_index + 1])
        cotangent[:, class_index : class_index + 1] = weights * prob * (1 - prob)
    else:
        prob = torch.softmax(logits, dim=1)
        own = prob[:, class_index : class_index + 1]
        cotangent = -weights * own * prob
        cotangent[:, class_index : class_index + 1] += weights * own
    return cotangent
