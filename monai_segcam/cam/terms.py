# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What is explained: the mean logits of one or several networks under test-time flips.

A deployed prediction is often ``Y = mean_m mean_f flip_f(net_m(flip_f(x)))`` (folds ``m``, mirror sets ``f``, as
nnU-Net predicts). Its region score is linear in each *term* ``(m, f)``, so the exact gradient of every term's
activations comes from one vector-Jacobian product of ``Y`` (each term carries its ``1 / (M F)``), and a map is the
sum over terms of the term's map flipped back. With one network and no flip there is one term: the plain CAM.

:py:class:`Terms` resolves the layers in every member; :py:class:`TermCapture` runs all terms of an input with the
activations of every term captured, and differentiates the mean logits with respect to them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from .capture import ActivationCapture
from .engine import check_activations, check_output
from .heads import HeadProbe, LinearHead
from .layers import ResolvedLayer, resolve_layers, unwrap_network
from .selection import select_logits

__all__ = ["Terms", "TermCapture", "WindowPlace", "mirror_flips", "term_gradients", "window_arguments"]

WindowPlace = tuple[Sequence[tuple[slice, ...]], Sequence[int]]
"""Where a batch of windows lies: each window's spatial slices in the padded grid, and the grid's padding."""


def window_arguments(network: nn.Module, windows: WindowPlace | None) -> dict[str, Any]:
    """The keyword arguments of ``network``'s forward on a batch of windows: what its ``window_arguments(slices, pad)``
    method returns (a promptable network's window coordinates, e.g.
    :py:class:`~monai_segcam.cam.prompts.PromptedVista3D`), none for any other network or without ``windows``.

    Example:
        >>> window_arguments(torch.nn.Conv3d(1, 2, 1), ([(slice(0, 8),) * 3], [0] * 6))
        {}
    """
    method = getattr(network, "window_arguments", None)
    if windows is None or not callable(method):
        return {}
    slices, pad = windows
    return dict(method(list(slices), list(pad)))



def mirror_flips(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes``, the identity first: nnU-Net's test-time mirroring.

    Example:
        >>> mirror_flips((0, 1))
        [(), (0,), (1,), (0, 1)]
    """
    axes = tuple(int(a) for a in axes)
    return [combo for n in range(len(axes) + 1) for combo in itertools.combinations(axes, n)]


class Terms:
    """The members (networks) and test-time flips of an explained prediction, with the layers resolved per member.

    Args:
        networks: one network or several (an ensemble, e.g. the folds of an nnU-Net model; logits are averaged).
        flips: sets of spatial axes (0-based) flipped on the input and back on the output; ``()`` is the identity.
            ``None`` means no flip.
        layers: the layer names or roles, resolved in every member.
        output_selector: picks the logits from a structured network output.
        amp: run the networks under ``torch.autocast`` (mixed precision); the logits come back in float32.
        amp_dtype: the autocast type; defaults to float16 on CUDA and bfloat16 elsewhere.
        example_input_shape: the probe input (or its spatial size) for discovering layer roles (a window's size).

    Example:
        .. code-block:: python

            terms = Terms([fold0, fold1], flips=mirror_flips((0, 1, 2)), layers="pre_head")
            terms.num_terms  # 16
    """

    def __init__(
        self,
        networks: nn.Module | Sequence[nn.Module],
        flips: Sequence[Sequence[int]] | None,
        layers: str | Sequence[str],
        output_selector: int | str | Callable[[Any], torch.Tensor] | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
        example_input_shape: Sequence[int] | None = None,
    ) -> None:
        members = [networks] if isinstance(networks, nn.Module) else list(networks)
        if not members or not all(isinstance(m, nn.Module) for m in members):
            raise TypeError("network must be a torch.nn.Module or a non-empty sequence of them.")
        self.networks = members
        self.flips = [()] if flips is None else [tuple(int(a) for a in f) for f in flips]
        if not self.flips:
            raise ValueError("flips is empty: give None (no flip) or a list of axis sets such as [(), (0,)].")
        if len(set(self.flips)) != len(self.flips) or any(len(set(f)) != len(f) for f in self.flips):
            raise ValueError(f"flips {self.flips} repeat an axis set or an axis.")
        self.layers = [resolve_layers(member, layers, example_input_shape) for member in members]
        self.output_selector = output_selector
        self.amp = amp
        self.amp_dtype = amp_dtype

    def autocast(self, device: torch.device) -> Any:
        """The autocast context of a forward pass on ``device`` (disabled without ``amp``)."""
        dtype = self.amp_dtype or (torch.float16 if device.type == "cuda" else torch.bfloat16)
        return torch.autocast(device_type=device.type, dtype=dtype, enabled=self.amp)

    @property
    def num_terms(self) -> int:
        """The number of (member, flip) terms."""
        return len(self.networks) * len(self.flips)

    def member(self, term: int) -> int:
        """The member index of ``term`` (terms run member by member, flips inside)."""
        return term // len(self.flips)

    def flip(self, tensor: torch.Tensor, term: int) -> torch.Tensor:
        """``tensor`` ``(B, C, *spatial)`` flipped along the spatial axes of ``term`` (its own inverse)."""
        axes = self.flips[term % len(self.flips)]
        return torch.flip(tensor, [2 + a for a in axes]) if axes else tensor

    def capture(self, differentiable: bool = True, with_layers: bool = True) -> TermCapture:
        """A context manager running every term with the layers captured (see :py:class:`TermCapture`)."""
        return TermCapture(self, differentiable, with_layers)


class TermCapture:
    """Runs all terms of an input with activations captured in every member, the networks held in ``eval()`` with
    frozen parameters and restored on exit (see :py:class:`~monai_segcam.cam.capture.ActivationCapture`).

    Example:
        .. code-block:: python

            with torch.enable_grad(), terms.capture() as run:
                logits = run(image)  # mean over terms
                grads = term_gradients(logits, run.activations, cotangent)  # {layer: [G of each term]}
    """

    def __init__(self, terms: Terms, differentiable: bool, with_layers: bool) -> None:
        self.terms = terms
        self.layers: list[list[ResolvedLayer]] = terms.layers if with_layers else [[] for _ in terms.networks]
        self.captures = [
            ActivationCapture(net, layers, differentiable) for net, layers in zip(terms.networks, self.layers)
        ]
        self.activations: dict[str, list[torch.Tensor]] = {}
        self.probes = [HeadProbe(unwrap_network(net)) for net in terms.networks] if differentiable and with_layers else []
        self.heads: list[LinearHead | None] = []
        self._stack = ExitStack()

    def __enter__(self) -> TermCapture:
        with ExitStack() as stack:
            for capture in self.captures:
                stack.enter_context(capture)
            for probe in self.probes:  # after the captures: it sees the outputs their hooks hand on
                stack.enter_context(probe)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.activations = {}
        self._stack.close()

    def __call__(self, x: torch.Tensor, windows: WindowPlace | None = None) -> torch.Tensor:
        """The mean logits of all terms on ``x``; :py:attr:`activations` holds ``{layer: [A of each term]}`` and
        :py:attr:`heads` each term's per-voxel linear head (``None`` where it has none or nothing is differentiated).

        ``windows``: where the batch ``x`` lies, ``(slices, pad)``: each window's spatial slices in the padded grid and
        the grid's padding (``torch.nn.functional.pad`` order). A network with a ``window_arguments(slices, pad)``
        method gets the keyword arguments it returns in its forward (:py:func:`window_arguments`)."""
        terms = self.terms
        self.activations = {layer.key: [] for layer in self.layers[0]}
        self.heads = []
        total: torch.Tensor | None = None
        for t in range(terms.num_terms):
            m = terms.member(t)
            capture, layers = self.captures[m], self.layers[m]
            capture.reset()
            # the bare network: a DDP forward may run collectives and a compiled one recompiles for the hooks
            with terms.autocast(x.device):
                network = unwrap_network(terms.networks[m])
                output = network(terms.flip(x, t), **window_arguments(network, windows))
                out = select_logits(output, terms.output_selector, x.shape[2:])
            self.heads.append(self.probes[m].head(out, capture.activations) if self.probes else None)
            out = terms.flip(out.to(x.dtype) if terms.amp else out, t)
            check_activations(capture, layers)
            check_output(out, layers)
            for layer in layers:
                self.activations[layer.key].append(capture.activations[layer.key])
            total = out if total is None else total + out
        assert total is not None
        return total if terms.num_terms == 1 else total / terms.num_terms


def term_gradients(
    logits: torch.Tensor,
    activations: dict[str, list[torch.Tensor]],
    cotangent: torch.Tensor,
    retain_graph: bool = False,
    scaled: bool = False,
) -> dict[str, list[torch.Tensor]]:
    """``dS/dA`` of every term's activations from one vector-Jacobian product of the mean ``logits``, in the
    logits' precision.

    Only the activations are differentiated (``autograd.grad``), never the parameters; a layer that does not lead to
    the logits gets zero gradients. With ``scaled`` (float16 activations, mixed precision) the cotangent is scaled
    by a power of two so that the half-precision gradients neither underflow nor overflow, as ``GradScaler`` does:
    the scale puts the cotangent's largest magnitude at 2^10 and is lowered by 2^6 while a gradient is not finite
    (the graph is retained for the retries).

    Example:
        .. code-block:: python

            grads = term_gradients(logits, run.activations, cotangent)["pre_head"][0]  # the first term's dS/dA
    """
    keys = list(activations)
    flat = [a for key in keys for a in activations[key]]
    with record_function("segcam::backward"):
        if not scaled:
            grads = torch.autograd.grad(logits, flat, cotangent, retain_graph=retain_graph, allow_unused=True)
            filled = [torch.zeros_like(a) if g is None else g for a, g in zip(flat, grads)]
        else:
            filled = _scaled_gradients(logits, flat, cotangent, retain_graph)
    bounds = [0]
    for key in keys:
        bounds.append(bounds[-1] + len(activations[key]))
    return {key: filled[bounds[i] : bounds[i + 1]] for i, key in enumerate(keys)}


def _scaled_gradients(
    logits: torch.Tensor, acts: list[torch.Tensor], cotangent: torch.Tensor, retain_graph: bool
) -> list[torch.Tensor]:
    """Gradients of half-precision activations with a scaled cotangent, unscaled in the logits' precision."""
    peak = float(cotangent.abs().max())
    if peak == 0:
        return [torch.zeros_like(a, dtype=logits.dtype) for a in acts]
    exponent = 10 - math.ceil(math.log2(peak))
    for attempt in range(4):
        scale = 2.0**exponent
        last = attempt == 3
        grads = torch.autograd.grad(logits, acts, cotangent * scale, retain_graph=retain_graph or not last,
                                    allow_unused=True)  # fmt: skip
        filled = [torch.zeros_like(a, dtype=logits.dtype) if g is None else g.to(logits.dtype) / scale
                  for a, g in zip(acts, grads)]  # fmt: skip
        if all(bool(torch.isfinite(g).all()) for g in filled):
            return filled
        exponent -= 6
    raise FloatingPointError("Half-precision gradients overflow at every scale; use amp_dtype=torch.bfloat16.")
