# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Randomisation sanity checks (Quantus' *Randomisation* category).

- Model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): a map that explains the
  model must change when the model's parameters are destroyed. Layers are randomised cumulatively from the output
  head back to the input, and after each step the map is compared with the original by rank (Spearman) and linear
  (Pearson) correlation: a faithful method's correlations fall towards 0 (:func:`cascading_randomization`).
- Random logit (Sixt et al. 2020, "When explanations lie"): a map that explains the class must change when another
  class is explained; the similarity between the map of the class and the map of a class drawn at random among the
  others is low for a class-sensitive method (:func:`random_logit`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
from monai.utils import look_up_option
from monai.utils.enums import StrEnum

__all__ = [
    "LayerOrder",
    "RandomizationStep",
    "pearson_correlation",
    "spearman_rank_correlation",
    "cascading_randomization",
    "RandomLogit",
    "random_logit",
]


class LayerOrder(StrEnum):
    """How the parameterised modules are ordered from input to output before being randomised in reverse."""

    EXECUTION = "execution"
    REGISTRATION = "registration"


class Similarity(StrEnum):
    """How :func:`random_logit` compares two maps."""

    PEARSON = "pearson"
    SPEARMAN = "spearman"


class RandomizationStep(NamedTuple):
    """One cascade step: the modules randomised at this step (cumulative with the previous steps) and the result."""

    modules: tuple[str, ...]
    spearman: float
    pearson: float
    cam: torch.Tensor | None = None


def _float(x: torch.Tensor) -> torch.Tensor:
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    return x.detach().reshape(-1).to(dtype)


def pearson_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between all elements of two tensors of the same shape (float64, 0-dim tensor).

    A constant input has no defined correlation: the result is NaN and a warning is issued (as in scipy).

    .. code-block:: python

        pearson_correlation(torch.arange(5.0), 2 * torch.arange(5.0) + 1)  # tensor(1., dtype=torch.float64)
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    a, b = _float(a), _float(b.to(a.device))
    if a.numel() < 2:
        raise ValueError("correlation needs at least 2 elements.")
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    if denom == 0:
        warnings.warn("correlation of a constant input is undefined: returning NaN.", stacklevel=2)
        return torch.full((), float("nan"), dtype=a.dtype, device=a.device)
    return ((a * b).sum() / denom).clamp(-1.0, 1.0)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1D tensor, tied values sharing the average of their ranks (scipy's ``rankdata``)."""
    values, order = torch.sort(x, stable=True)
    starts_group = torch.ones_like(values, dtype=torch.bool)
    starts_group[1:] = values[1:] != values[:-1]
    group = torch.cumsum(starts_group, 0) - 1
    counts = torch.bincount(group)
    ends = torch.cumsum(counts, 0)  # 1-based rank of each group's last element
    mean_rank = (ends - (counts - 1) / 2).to(x.dtype)
    ranks = torch.empty_like(x)
    ranks[order] = mean_rank[group]
    return ranks


def spearman_rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between all elements of two tensors of the same shape, on their device.

    Pearson correlation of the average ranks (ties share the mean of their ranks), as ``scipy.stats.spearmanr``.

    .. code-block:: python

        spearman_rank_correlation(torch.rand(8, 8, 8), torch.rand(8, 8, 8))  # about 0
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    return pearson_correlation(_average_ranks(_float(a)), _average_ranks(_float(b.to(a.device))))


def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _execution_order(network: nn.Module, cam_fn: Callable[[nn.Module], torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """Names of the parameterised modules in order of first execution during ``cam_fn(network)``, and its map."""
    order: list[str] = []

    def record(name: str) -> Callable[..., None]:
        def hook(*_) -> None:
            if name not in order:
                order.append(name)

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in network.named_modules()
        if _own_parameters(module)
    ]
    try:
        cam = cam_fn(network)
    finally:
        for handle in handles:
            handle.remove()
    return order, cam


def _resolve_groups(network: nn.Module, layers: Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    names = dict(network.named_modules())
    groups = [(group,) if isinstance(group, str) else tuple(group) for group in layers]
    for group in groups:
        unknown = [name for name in group if name not in names]
        if unknown or not group:
            raise ValueError(f"unknown or empty module group {group} (unknown: {unknown}).")
        if not any(_own_parameters(m) for name in group for m in names[name].modules()):
            raise ValueError(f"module group {group} has no parameters to randomise.")
    return groups


@torch.no_grad()
def _randomize(module: nn.Module, recurse: bool) -> None:
    """Re-initialise with ``reset_parameters()`` where available, else replace parameters by normal noise.

    The noise keeps each parameter's standard deviation (1 where undefined) and is drawn on the CPU, so that a seed
    gives the same network on every device.
    """
    for m in module.modules() if recurse else [module]:
        params = _own_parameters(m)
        if not params:
            continue
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
            continue
        for p in params:
            std = p.std().item() if p.numel() > 1 else 0.0
            p.copy_(torch.randn(p.shape, dtype=p.dtype) * (std if std > 0 else 1.0))


def cascading_randomization(
    cam_fn: Callable[[nn.Module], torch.Tensor],
    network: nn.Module,
    layers: Sequence[str | Sequence[str]] | None = None,
    order: str = LayerOrder.EXECUTION,
    seed: int = 0,
    absolute: bool = True,
    return_maps: bool = False,
) -> list[RandomizationStep]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) on a deep copy of ``network``.

    The user's network is never modified. The copy's parameterised modules (modules with parameters of their own)
    are randomised cumulatively from the output head back to the input, one module per step, or one user-given
    group per step. After each step ``cam_fn(randomised_copy)`` is compared with the map of the intact copy.
    Randomisation calls ``reset_parameters()`` where a module has it, else draws normal noise of the parameter's
    standard deviation; the RNG is seeded per step (seeds drawn from ``seed``) inside :func:`torch.random.fork_rng`,
    so the global RNG state is left untouched.

    Args:
        cam_fn: computes a map from a network, e.g. ``lambda net: SegCAM(net, ...)(image).map``.
        network: the network to check (left unchanged).
        layers: optional cascade given by the user, output side first: each entry a module name or a list of names
            randomised together (with all their submodules). ``None`` randomises each parameterised module in turn.
        order: ``"execution"`` orders modules by their first call during ``cam_fn`` (modules never called do not
            affect the map and are skipped; if ``cam_fn`` calls none, registration order is used with a warning);
            ``"registration"`` uses ``named_modules()`` order. Reversed for the cascade.
        seed: seed of the randomisation.
        absolute: correlate ``|map|`` (as Adebayo et al. report for signed maps) rather than the signed map.
        return_maps: keep each step's map in the result.

    Returns:
        one :class:`RandomizationStep` ``(modules, spearman, pearson, cam)`` per step, in cascade order.

    .. code-block:: python

        steps = cascading_randomization(lambda net: SegCAM(net, layers="pre_head")(image).map, net)
        for step in steps:
            print(step.modules, step.spearman)  # falls towards 0 for a map that depends on the weights
    """
    order = look_up_option(order, LayerOrder)
    randomized = copy.deepcopy(network)
    groups: list[tuple[str, ...]]
    if layers is None:
        names, original = _execution_order(randomized, cam_fn)
        if not names and order == LayerOrder.EXECUTION:
            warnings.warn("cam_fn called no parameterised module: registration order used.", stacklevel=2)
        if not names or order == LayerOrder.REGISTRATION:
            names = [name for name, m in randomized.named_modules() if _own_parameters(m)]
        groups = [(name,) for name in reversed(names)]
        recurse = False
    else:
        groups = _resolve_groups(randomized, layers)
        original = cam_fn(randomized)
        recurse = True
    if not groups:
        raise ValueError("the network has no parameterised modules to randomise.")
    original = original.detach()
    reference = original.abs() if absolute else original
    modules = dict(randomized.named_modules())
    devices = sorted({p.device.index or 0 for p in randomized.parameters() if p.device.type == "cuda"})
    # per-step seeds drawn from `seed`, so that they do not coincide with the seed the network was built with
    step_seeds = torch.randint(2**62, (len(groups),), generator=torch.Generator().manual_seed(seed)).tolist()
    results = []
    for group, step_seed in zip(groups, step_seeds):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step_seed)
            for name in group:
                _randomize(modules[name], recurse)
        cam = cam_fn(randomized).detach()
        if cam.shape != original.shape:
            raise ValueError(f"cam_fn returned shape {tuple(cam.shape)}, the original map is {tuple(original.shape)}.")
        compared = cam.abs() if absolute else cam
        results.append(
            RandomizationStep(
                modules=group,
                spearman=float(spearman_rank_correlation(reference, compared)),
                pearson=float(pearson_correlation(reference, compared)),
                cam=cam if return_maps else None,
            )
        )
    return results


class RandomLogit(NamedTuple):
    """The random-logit check of one class: the other class drawn and the maps' similarity (lower: class-sensitive)."""

    other: int
    similarity: float


def random_logit(
    explain_fn: Callable[[int], torch.Tensor],
    target: int,
    classes: Sequence[int],
    seed: int = 0,
    similarity: str = Similarity.PEARSON,
    absolute: bool = True,
) -> RandomLogit:
    """The random-logit check (Sixt et al. 2020; Quantus ``RandomLogit``): the similarity between the map of
    ``target`` and the map of a class drawn uniformly (seeded) among the other ``classes``.

    Quantus compares by SSIM by default; here by Pearson (linear) or Spearman (rank) correlation over the voxels,
    as the parameter randomisation above: 1 when the other class's map is the same (the method ignores the class),
    near 0 or below when it is not.

    Args:
        explain_fn: maps a class index to its map (the same region and image for every class).
        target: the explained class.
        classes: the classes the other is drawn from (``target`` excluded; at least one other).
        seed: seeds the draw.
        similarity: ``"pearson"`` or ``"spearman"``.
        absolute: compare ``|map|`` (as the parameter randomisation does for signed maps).

    Returns:
        :class:`RandomLogit` ``(other, similarity)``.

    Example:
        .. code-block:: python

            check = random_logit(lambda c: engine(image, classes=c, region=region)["pre_head"], 1, [0, 1, 2])
            check.other, check.similarity  # e.g. (2, 0.08): the map changes with the class
    """
    kind = look_up_option(similarity, Similarity)
    others = [int(c) for c in classes if int(c) != int(target)]
    if not others:
        raise ValueError(f"random_logit needs a class other than {target} among {list(classes)}.")
    other = others[int(torch.randint(len(others), (1,), generator=torch.Generator().manual_seed(seed)))]
    a, b = explain_fn(int(target)).detach(), explain_fn(other).detach()
    if a.shape != b.shape:
        raise ValueError(f"the maps of classes {target} and {other} differ in shape: {tuple(a.shape)}, {tuple(b.shape)}.")
    a, b = (a.abs(), b.abs()) if absolute else (a, b)
    compare = pearson_correlation if kind == Similarity.PEARSON else spearman_rank_correlation
    return RandomLogit(other=other, similarity=float(compare(a, b)))
