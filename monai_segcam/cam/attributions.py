# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Input attributions as methods of the CAM engines: ``gradient``, ``input_x_gradient``, ``smoothgrad`` and
``integrated_gradients``, with the result key ``"input"``.

They are rules of the same engines (:py:class:`~monai_segcam.SegCAM`, :py:class:`~monai_segcam.SlidingWindowSegCAM`,
ensembles and test-time flips) whose "layer" is the network's input (:py:data:`~monai_segcam.cam.layers.INPUT_LAYER`),
so they are exact for what is deployed: the gradient ``G = dS/dx`` of the region score of the *stitched*
prediction, one vector-Jacobian product per window touching the region (windows outside it are skipped), pulled
back through MONAI's padding. Every input attribution is

``map_k = f_k(x, x0) * sum_p w_p G_k(x_p)``

per input channel ``k``, summed over the channels for the map (the per-channel maps are kept in
:py:attr:`~monai_segcam.CAMResult.channels`): the points ``x_p`` with weights ``w_p`` are *items* of the engine's
window pass (each point's windows run like a batch item's, its cotangent scaled by ``w_p``, its map added to the
item's), the same loop that runs folds and flips as terms:

- ``gradient``: one point ``x``, ``f = 1``: ``sum_k dS/dx_k`` (signed);
- ``input_x_gradient``: one point ``x``, ``f = x``: HiResCAM with ``A`` the network input;
- ``smoothgrad``: ``n_samples`` points ``x + noise`` (Gaussian, standard deviation ``noise_level * (max - min)`` of
  each image, as MONAI's ``SmoothGrad`` scales it), ``w = 1 / n``, ``f = 1``;
- ``integrated_gradients``: ``n_steps`` points ``x0 + a_p (x - x0)`` of a quadrature rule on [0, 1] with weights
  ``w_p``, ``f = x - x0`` (Sundararajan et al. 2017). The rules have captum's names; ``"riemann_trapezoid"`` is the
  true trapezoid rule (weights summing to 1), whereas captum's weights sum to ``1 - 1/n``.

The region is taken once from the clean prediction; with ``target="probabilities"`` each point's cotangent comes
from its own stitched prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.utils import StrEnum, look_up_option

from ..utils.baselines import make_baseline
from .layers import INPUT_LAYER
from .methods import CAMRule, register_method

__all__ = [
    "Quadrature",
    "quadrature_rule",
    "InputPoints",
    "InputAttributionRule",
    "GradientRule",
    "InputXGradientRule",
    "SmoothGradRule",
    "IntegratedGradientsRule",
]


class Quadrature(StrEnum):
    """Quadrature rules on [0, 1] for Integrated Gradients, with captum's names."""

    GAUSS_LEGENDRE = "gausslegendre"
    RIEMANN_LEFT = "riemann_left"
    RIEMANN_RIGHT = "riemann_right"
    RIEMANN_MIDDLE = "riemann_middle"
    RIEMANN_TRAPEZOID = "riemann_trapezoid"


def quadrature_rule(method: str, n: int) -> tuple[list[float], list[float]]:
    """The points ``a`` and weights ``w`` (summing to 1) of an ``n``-point quadrature rule on [0, 1].

    ``"riemann_trapezoid"`` is the composite trapezoid rule on ``n`` equally spaced points (weights
    ``[1/2, 1, ..., 1, 1/2] / (n - 1)``), exact for linear integrands; captum's weights are these times ``(n - 1)/n``.

    Example:
        >>> quadrature_rule("riemann_trapezoid", 3)
        ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    method = look_up_option(method, Quadrature)
    if n < 1 or (n < 2 and method == Quadrature.RIEMANN_TRAPEZOID):
        raise ValueError(f"n_steps must be at least {2 if method == Quadrature.RIEMANN_TRAPEZOID else 1}, got {n}.")
    if method == Quadrature.GAUSS_LEGENDRE:
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    if method == Quadrature.RIEMANN_TRAPEZOID:
        return [k / (n - 1) for k in range(n)], [(0.5 if k in (0, n - 1) else 1.0) / (n - 1) for k in range(n)]
    offsets: dict[str, float] = {Quadrature.RIEMANN_LEFT: 0.0, Quadrature.RIEMANN_MIDDLE: 0.5, Quadrature.RIEMANN_RIGHT: 1.0}
    offset = offsets[str(method)]
    return [(k + offset) / n for k in range(n)], [1.0 / n] * n


@dataclass
class InputPoints:
    """The points where an input attribution takes the gradient, for each image of a batch.

    Point ``p`` of image ``b`` is ``base_b + alphas[p] * (x_b - base_b) + sd_b * noise_{b,p}``; item ``b * count + p``
    of the engine's window pass. The noise of each item comes from its own generator (seeded with ``seed`` and the
    item), so a window pass that runs an item's windows again sees the same noise.

    Attributes:
        image: the images ``(B, C, *spatial)``.
        base: the baseline images (``None``: the point is the image itself plus noise).
        alphas, weights: the points' path coefficients and weights ``w_p``.
        noise_sd: the noise's standard deviation per image ``(B,)`` (``None``: no noise).
        seed: the noise's seed.

    Example:
        .. code-block:: python

            points = IntegratedGradientsRule(n_steps=8).input_points(image)
            points.volume(0)  # (1, C, *spatial): the first path point of image 0
    """

    image: torch.Tensor
    base: torch.Tensor | None
    alphas: Sequence[float]
    weights: Sequence[float]
    noise_sd: torch.Tensor | None = None
    seed: int = 0

    @property
    def count(self) -> int:
        """Points per image."""
        return len(self.weights)

    def volume(self, item: int) -> torch.Tensor:
        """Item ``item`` (image ``item // count``, point ``item % count``) ``(1, C, *spatial)``."""
        b, p = divmod(item, self.count)
        x = self.image[b : b + 1]
        if self.base is not None:
            base = self.base[b : b + 1]
            x = base + self.alphas[p] * (x - base)
        if self.noise_sd is not None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed + item)
            x = x + self.noise_sd[b] * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x


class InputAttributionRule(CAMRule):
    """Base of the input attributions: a local rule of the network's input whose raw map is the per-channel
    gradient ``G`` at each point, combined as ``f(x, x0) * sum_p w_p G(x_p)`` once every window ran.

    Subclasses set the points (:py:meth:`input_points`) and the combination (:py:meth:`finish`).

    Example:
        .. code-block:: python

            @register_method("gradient_squared")
            class GradientSquared(InputAttributionRule):  # a new input attribution on the same machinery
                def finish(self, image, points, grads):
                    return grads**2

            maps = SegCAM(net, method="gradient_squared")(image, classes=1)["input"]
    """

    local = True
    layer = INPUT_LAYER

    def map_channels(self, input_channels: int) -> int:
        return input_channels

    def local_map(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        assert grads is not None
        return grads

    def local_scale(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """Zero: an input gradient is no sum of products that cancels to round-off, it is never zeroed as such."""
        return torch.zeros_like(acts[:, :1])

    def input_points(self, image: torch.Tensor) -> InputPoints:
        """The points of ``image`` ``(B, C, *spatial)``: the image itself."""
        return InputPoints(image, None, [1.0], [1.0])

    def finish(self, image: torch.Tensor, points: InputPoints, grads: torch.Tensor) -> torch.Tensor:
        """The per-channel maps ``(B, n, C, *s)`` from the weighted gradients ``grads`` ``(B, n, C, *s)`` and the
        image ``(B, C, *s)`` (both on the same grid): the gradient itself."""
        return grads

    def finish_maps(self, source: Any) -> dict[str, torch.Tensor]:
        """The per-channel maps ``(B, n, C, *padded)`` of a window pass (``source``) on its padded grid: the weighted
        gradients pulled back through the padding (a crop for constant padding), then :py:meth:`finish`."""
        grid, x = source.grid, source.x
        raw = source.maps[self.layer]
        grads = raw.view(x.shape[0], raw.shape[1] // x.shape[1], *x.shape[1:])
        if grid.padded and grid.padding_mode != "constant":
            leaf = torch.zeros((x.shape[0], *x.shape[1:2], *grid.spatial_shape), dtype=x.dtype, device=x.device)
            leaf.requires_grad_(True)
            with torch.enable_grad():
                padded = grid.pad_image(leaf)
                pulled = [torch.autograd.grad(padded, leaf, grads[:, i], retain_graph=True)[0] for i in range(grads.shape[1])]
            grads = grid.pad_zeros(torch.stack(pulled, 1).flatten(1, 2)).view_as(grads)
        points = source.points if source.points is not None else self.input_points(x)
        if points.base is not None:
            points = InputPoints(x, grid.pad_image(points.base), points.alphas, points.weights)
        else:
            points = InputPoints(x, None, points.alphas, points.weights)
        return {self.layer: self.finish(x, points, grads)}


@register_method("gradient")
class GradientRule(InputAttributionRule):
    """The input gradient of the region score, ``sum_k dS/dx_k``: signed (pass ``relu=False`` to keep the negative
    part).

    Example:
        .. code-block:: python

            result = SlidingWindowSegCAM(net, (96, 96, 96), method="gradient", relu=False)(image, classes=1)
            result["input"], result.channels["input"]  # (B, 1, *spatial) and per input channel (B, 1, C, *spatial)
    """


@register_method("input_x_gradient")
class InputXGradientRule(InputAttributionRule):
    """Input × gradient, ``sum_k x_k dS/dx_k``: HiResCAM with ``A`` the network input.

    Example:
        .. code-block:: python

            maps = SegCAM(net, method="input_x_gradient")(image, classes=[1, 2])["input"]  # (B, 2, *spatial)
    """

    def finish(self, image, points, grads):
        return image[:, None] * grads


@register_method("smoothgrad")
class SmoothGradRule(InputAttributionRule):
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over ``n_samples`` noisy copies of the whole volume.

    Args:
        n_samples: the number of noisy copies.
        noise_level: the noise's standard deviation as a fraction of each image's ``max - min`` (MONAI's
            ``stdev_spread``).
        seed: the noise's seed (the same seed gives the same map); ``None`` draws one from torch's generator.

    Example:
        .. code-block:: python

            smooth = SlidingWindowSegCAM(net, (96, 96, 96), method="smoothgrad", n_samples=16, noise_level=0.1, seed=0)
            maps = smooth(image, classes=1)["input"]
    """

    def __init__(self, n_samples: int = 25, noise_level: float = 0.15, seed: int | None = None) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples}.")
        if not (math.isfinite(noise_level) and noise_level >= 0):
            raise ValueError(f"noise_level must be a non-negative number, got {noise_level}.")
        self.n_samples, self.noise_level, self.seed = n_samples, float(noise_level), seed

    def input_points(self, image):
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        flat = image.flatten(1)
        sd = self.noise_level * (flat.amax(1) - flat.amin(1))
        return InputPoints(image, None, [1.0] * self.n_samples, [1.0 / self.n_samples] * self.n_samples, sd, seed)


@register_method("integrated_gradients")
class IntegratedGradientsRule(InputAttributionRule):
    """Integrated Gradients: ``(x - x0) * sum_p w_p dS/dx(x0 + a_p (x - x0))``; its sum approaches
    ``S(x) - S(x0)`` (completeness).

    Args:
        n_steps: the number of path points (each a forward and backward pass of the windows touching the region).
        quadrature: the rule, see :py:class:`Quadrature` (captum's names; ``"gausslegendre"`` by default).
        baseline: ``x0``: a number, ``"mean"`` or ``"blur"`` (as occlusion's baselines).
        blur_sigma: the Gaussian sigma (voxels) of the ``"blur"`` baseline.

    Example:
        .. code-block:: python

            ig = SlidingWindowSegCAM(net, (96, 96, 96), method="integrated_gradients", n_steps=32, relu=False)
            result = ig(image, classes=1)  # result["input"].sum() ~ S(x) - S(x0)
    """

    def __init__(
        self, n_steps: int = 32, quadrature: str = "gausslegendre", baseline: float | str = 0.0, blur_sigma: float = 5.0
    ) -> None:
        self.alphas, self.point_weights = quadrature_rule(quadrature, n_steps)
        make_baseline(torch.zeros(1, 1, 1), baseline, blur_sigma)  # checks the baseline
        self.n_steps, self.quadrature, self.baseline, self.blur_sigma = n_steps, quadrature, baseline, blur_sigma

    def input_points(self, image):
        return InputPoints(image, make_baseline(image, self.baseline, self.blur_sigma), self.alphas, self.point_weights)

    def finish(self, image, points, grads):
        assert points.base is not None
        return (image - points.base)[:, None] * grads
