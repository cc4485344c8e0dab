# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""An autograd reference for the CAM of nnU-Net's prediction, independent of the engines' code.

It computes nnU-Net's logits the plain way (pad, tiles, each tile mirrored over every axis subset and flipped back,
the folds' outputs averaged, Gaussian-weighted sums divided by the summed weights), records every activation of the
explained layer (one per fold, tile and mirroring) with a forward hook, differentiates the region score of the
stitched logits with respect to all of them in one ``autograd.grad``, and adds each term's HiResCAM
``sum_k G^k A^k``, upsampled to the tile, mirrored back, at its tile.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window


def nnunet_tiles(spatial, patch, step=0.5):
    """nnU-Net's padded shape, the image's slicer in it, and the tile slices."""
    padded, slicer = pad_nd_image(torch.zeros((1, *spatial)), patch, "constant", {"value": 0}, True)
    steps = compute_steps_for_sliding_window(padded.shape[1:], patch, step)
    tiles = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in itertools.product(*steps)]
    return tuple(padded.shape[1:]), slicer[1:], tiles


def reference(networks, mirror_axes, patch, data, layer, cotangent):
    """Stitched logits ``(K, *spatial)`` and the HiResCAM map ``(1, *spatial)`` (before ReLU) of the score
    ``sum(cotangent * logits)`` for ``layer`` (a module name), from plain autograd.

    Args:
        networks: the folds' networks.
        mirror_axes: nnU-Net's allowed mirroring axes (spatial, 0-based); ``()`` for no mirroring.
        patch: the tile size.
        data: the preprocessed case ``(C, *spatial)``.
        layer: the ``named_modules()`` name of the explained layer.
        cotangent: ``(K, *spatial)``, the score's weights on the logits.
    """
    spatial = tuple(data.shape[1:])
    padded_shape, slicer, tiles = nnunet_tiles(spatial, patch)
    x = pad_nd_image(data, patch, "constant", {"value": 0})[None].double()
    # the predictor's Gaussian: computed in float16 (corners that underflow are raised to its smallest value)
    gaussian = compute_gaussian(tuple(patch), 1.0 / 8, 10, dtype=torch.float16, device=torch.device("cpu")).double()
    mirrors = [c for n in range(len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, n)]
    records = []  # (activation, tile, mirror axes) of every call
    hooks = []
    for net in networks:
        module = dict(net.named_modules())[layer]
        hooks.append(module.register_forward_hook(lambda _m, _i, out: records.append(out)))
    terms = []
    try:
        with torch.enable_grad():
            total = 0
            for net in [n.double().eval() for n in networks]:
                stitched = torch.zeros((1, cotangent.shape[0], *padded_shape), dtype=torch.float64)
                count = torch.zeros((1, 1, *padded_shape), dtype=torch.float64)
                for tile in tiles:
                    window = x[(..., *tile)]
                    mean = 0
                    for axes in mirrors:
                        dims = [2 + a for a in axes]
                        flip = (lambda t, dims=dims: torch.flip(t, dims)) if dims else (lambda t: t)
                        mean = mean + flip(net(flip(window)))
                        terms.append((tile, dims))
                    out = mean / len(mirrors)
                    stitched[(..., *tile)] = stitched[(..., *tile)] + out * gaussian
                    count[(..., *tile)] += gaussian
                total = total + stitched / count
            logits = (total / len(networks))[(0, slice(None), *slicer)]
            score = (logits * cotangent.double()).sum()
            grads = torch.autograd.grad(score, records)
    finally:
        for hook in hooks:
            hook.remove()
        for net in networks:
            net.float()
    cam = torch.zeros((1, 1, *padded_shape), dtype=torch.float64)
    for a, g, (tile, dims) in zip(records, grads, terms):
        local = (a.detach() * g).sum(1, keepdim=True)
        if tuple(local.shape[2:]) != tuple(patch):
            local = F.interpolate(local, size=tuple(patch), mode="trilinear", align_corners=False)
        cam[(..., *tile)] += torch.flip(local, dims) if dims else local
    return logits.detach().float(), cam[(0, slice(None), *slicer)].float()
