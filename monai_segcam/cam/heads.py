# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The gradients of many classes at once.

A class's gradient is the vector-Jacobian product ``G_c = J^T T_c`` of its cotangent ``T_c`` (the region score's
``dS/dlogits``). Two facts make every class cheap:

- **A per-voxel linear head.** When a network's logits are exactly the output of a 1×1(×1) convolution ``W`` (stride
  1, no padding, one group: the heads of DynUNet, BasicUNet, SwinUNETR, nnU-Net's ``PlainConvUNet``, SegResNet's
  ``conv_final.2``), the gradient at the head's input ``H`` is ``W^T T_c`` voxel by voxel: one einsum for every
  class, no autograd (for ``target="logits"`` the cotangent lives on channel ``c`` only and it is the outer product
  ``W[c] ⊗ t_c``). When ``H`` is the explained activation itself (``pre_head`` feeding the head) that is the
  gradient; otherwise (SegResNet's GroupNorm and ReLU between ``pre_head`` and its head, a deeper layer) it is pulled
  back from ``H`` by one batched backward.
- **Batched backward.** The cotangents of a chunk of classes go through one ``torch.autograd.grad(...,
  is_grads_batched=True)`` (``vmap`` over the backward); an operation without a batching rule falls back to one
  backward per class, with the same result.

The head is found at run time, not from the network's class: :py:class:`HeadProbe` records the last eligible
convolution of a forward pass, and it is the head only when the logits *are* its output tensor. Classes are taken in
chunks of at most ``CLASS_CHUNK_BYTES`` of gradients and cotangents (256 MiB), so memory does not grow with the number
of classes beyond one chunk (the maps of every class, the output, are the caller's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

__all__ = ["CLASS_CHUNK_BYTES", "LinearHead", "HeadProbe", "class_chunks", "class_gradients"]

CLASS_CHUNK_BYTES = 1 << 28
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LinearHead:
    """A term's per-voxel linear head: ``logits = conv(input)`` with a 1×1(×1) convolution ``conv``.

    Attributes:
        conv: the convolution (its ``weight`` is ``(C_out, C_in, 1, ..)``).
        input: the tensor the convolution read (on the autograd graph of the captured activations).
        copy_of: the key of the captured activation ``input`` is a copy of (``pre_head`` feeding the head), or ``None``.

    Example:
        .. code-block:: python

            head = LinearHead(net.final_conv.conv, features, copy_of="pre_head")
            grads = head.pull_back(cotangents)  # (k, B, C_in, *spatial): W^T T_k voxel by voxel
    """

    conv: nn.Module
    input: torch.Tensor
    copy_of: str | None = None

    def pull_back(self, cotangents: torch.Tensor, channels: Sequence[int] | None = None) -> torch.Tensor:
        """``W^T T_k`` of cotangents ``(k, B, C_out, *spatial)``, or with ``channels`` (one per k) of cotangents
        ``(k, B, 1, *spatial)`` living on that output channel only; in the cotangents' precision."""
        conv: Any = self.conv
        weight = conv.weight.flatten(1).to(cotangents.dtype)  # (C_out, C_in)
        with record_function("segcam::head_gradients"):
            if channels is None:
                return torch.einsum("oc,bo...->bc...", weight, cotangents.flatten(0, 1)).unflatten(0, cotangents.shape[:2])
            rows = weight[list(channels)]  # (k, C_in)
            return torch.einsum("kc,kb...->kbc...", rows, cotangents[:, :, 0])


def _eligible(module: nn.Module) -> bool:
    """A plain 1×1(×1) convolution: stride 1, no padding, one group."""
    if type(module) not in _CONVOLUTIONS:
        return False
    conv: Any = module
    padding = conv.padding if isinstance(conv.padding, tuple) else (0,) if conv.padding == "valid" else (1,)
    ones = all(k == 1 for k in conv.kernel_size) and all(s == 1 for s in conv.stride)
    return ones and all(p == 0 for p in padding) and conv.groups == 1


class HeadProbe:
    """Records the last eligible 1×1(×1) convolution a network ran (its module, input and output) while active.

    Example:
        .. code-block:: python

            with HeadProbe(net) as probe:
                logits = net(image)
                head = probe.head(logits, activations)  # a LinearHead when logits is that convolution's output
    """

    def __init__(self, network: nn.Module) -> None:
        self.modules = [m for m in network.modules() if _eligible(m)]
        self.last: tuple[nn.Module, torch.Tensor, torch.Tensor] | None = None
        self._handles: list[Any] = []

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            self.last = (module, args[0], output)

    def __enter__(self) -> HeadProbe:
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self.last = [], None

    def head(self, logits: torch.Tensor, activations: dict[str, torch.Tensor]) -> LinearHead | None:
        """The head of the forward pass just run when ``logits`` is the last eligible convolution's output (and its
        input is on the graph of the activations), else ``None``; forgets the pass."""
        last, self.last = self.last, None
        if last is None or last[2] is not logits or not last[1].requires_grad:
            return None
        conv, features, _ = last
        copy_of = next((key for key, a in activations.items() if _copy_of(features, a)), None)
        return LinearHead(conv, features, copy_of)


def _copy_of(tensor: torch.Tensor, activation: torch.Tensor) -> bool:
    """Whether ``tensor`` is ``activation.clone()`` (how the capture hands a captured activation on)."""
    node = tensor.grad_fn
    if node is None or node.name() != "CloneBackward0" or not node.next_functions:
        return False
    source = node.next_functions[0][0]
    return source is activation.grad_fn if activation.grad_fn is not None else getattr(source, "variable", None) is activation


def class_chunks(count: int, bytes_per_class: int, budget: int | None = None) -> list[range]:
    """``range(count)`` in consecutive chunks of at most ``budget // bytes_per_class`` classes (at least one);
    ``budget`` defaults to ``CLASS_CHUNK_BYTES``.

    Example:
        >>> class_chunks(5, 100, budget=250)
        [range(0, 2), range(2, 4), range(4, 5)]
    """
    size = max(1, (CLASS_CHUNK_BYTES if budget is None else budget) // max(1, bytes_per_class))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def class_gradients(
    logits: torch.Tensor,
    activations: dict[str, list[torch.Tensor]],
    heads: Sequence[LinearHead | None],
    cotangents: torch.Tensor,
    channels: Sequence[int] | None,
    flip: Callable[[torch.Tensor, int], torch.Tensor],
    scaled: bool = False,
) -> list[dict[str, list[torch.Tensor]]]:
    """``dS_k/dA`` of every term's activations for each of ``k`` stacked cotangents of the mean ``logits``, as
    ``term_gradients`` gives them class by class (zeros for a layer not leading to the logits), in the logits'
    precision.

    Args:
        logits: the mean logits of the terms ``(B, C, *spatial)`` (with their graph).
        activations: ``{layer: [A of each term]}``.
        heads: each term's :py:class:`LinearHead`, ``None`` where it has none (then every class goes through the
            batched backward of the logits).
        cotangents: ``(k, B, C, *spatial)``, or ``(k, B, 1, *spatial)`` on output channel ``channels[k]``.
        channels: the output channel of each compact cotangent, ``None`` for full ones.
        flip: ``flip(tensor, t)`` flips ``(B, C, *spatial)`` along term ``t``'s axes (its own inverse).
        scaled: scale half-precision backward passes (see ``term_gradients``).

    Example:
        .. code-block:: python

            grads = class_gradients(logits, run.activations, run.heads, cotangents, None, terms.flip)
            grads[k]["pre_head"][t]  # class k's gradient of term t's activation
    """
    count, num_terms = cotangents.shape[0], len(heads)
    keys = list(activations)
    grads: dict[tuple[str, int], torch.Tensor] = {}
    if all(head is not None for head in heads):
        pulled: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        for t, head in enumerate(heads):
            assert head is not None
            term = _flip_batched(cotangents, t, flip) / num_terms if num_terms > 1 else _flip_batched(cotangents, t, flip)
            at_input = head.pull_back(term, channels)
            if head.copy_of is not None:
                grads[(head.copy_of, t)] = at_input
            pulled.append((head.input, at_input, t))
        wanted = [(key, t) for key in keys for t in range(num_terms) if (key, t) not in grads]
        if wanted:
            outputs = [h for h, _, _ in pulled]
            found = _batched_grad(outputs, [activations[k][t] for k, t in wanted], [g for _, g, _ in pulled], scaled)
            grads.update(zip(wanted, found))
    else:
        full = cotangents if channels is None else _scatter(cotangents, channels, logits.shape[1])
        wanted = [(key, t) for key in keys for t in range(num_terms)]
        grads.update(zip(wanted, _batched_grad([logits], [activations[k][t] for k, t in wanted], [full], scaled)))
    return [{key: [grads[(key, t)][i].to(logits.dtype) for t in range(num_terms)] for key in keys} for i in range(count)]


def _flip_batched(tensor: torch.Tensor, t: int, flip: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    return flip(tensor.flatten(0, 1), t).unflatten(0, tensor.shape[:2])


def _scatter(compact: torch.Tensor, channels: Sequence[int], num_channels: int) -> torch.Tensor:
    """Full cotangents ``(k, B, C, *spatial)`` of compact ones living on one channel each."""
    full = compact.new_zeros((compact.shape[0], compact.shape[1], num_channels, *compact.shape[3:]))
    for i, channel in enumerate(channels):
        full[i, :, channel] = compact[i, :, 0]
    return full


def _batched_grad(
    outputs: list[torch.Tensor], inputs: list[torch.Tensor], cotangents: list[torch.Tensor], scaled: bool
) -> list[torch.Tensor]:
    """``(k, *input.shape)`` gradients of each input for ``k`` batched cotangents of ``outputs``: one batched
    backward (half precision: scaled as ``term_gradients`` scales), one per cotangent where an operation does not
    batch. The graph is kept (the caller may need it for the next chunk)."""
    count = cotangents[0].shape[0]
    peak = max(float(c.abs().max()) for c in cotangents) if scaled else 1.0
    if peak == 0:
        return [torch.zeros((count, *a.shape), dtype=cotangents[0].dtype, device=a.device) for a in inputs]
    exponent = 10 - math.ceil(math.log2(peak)) if scaled else 0
    for _attempt in range(4 if scaled else 1):
        scale = 2.0**exponent
        found = _vjp(outputs, inputs, [(c * scale).to(o.dtype) for o, c in zip(outputs, cotangents)])
        filled = [torch.zeros((count, *a.shape), dtype=cotangents[0].dtype, device=a.device) if g is None
                  else g.to(cotangents[0].dtype) / scale for a, g in zip(inputs, found)]  # fmt: skip
        if not scaled or all(bool(torch.isfinite(g).all()) for g in filled):
            return filled
        exponent -= 6
    raise FloatingPointError("Half-precision gradients overflow at every scale; use amp_dtype=torch.bfloat16.")


def _vjp(outputs: list[torch.Tensor], inputs: list[torch.Tensor], cotangents: list[torch.Tensor]) -> list[Any]:
    with record_function("segcam::backward"):
        try:
            return list(torch.autograd.grad(outputs, inputs, cotangents, retain_graph=True, allow_unused=True,
                                            is_grads_batched=True))  # fmt: skip
        except RuntimeError:  # an operation without a batching rule: one backward per cotangent
            per_class = [torch.autograd.grad(outputs, inputs, [c[i] for c in cotangents], retain_graph=True,
                                             allow_unused=True) for i in range(cotangents[0].shape[0])]  # fmt: skip
            return [None if per_class[0][j] is None else torch.stack([g[j] for g in per_class]) for j in range(len(inputs))]
