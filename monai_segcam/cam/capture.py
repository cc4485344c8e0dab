# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Capturing layer activations for CAMs without side effects on the network.

:py:class:`ActivationCapture` is the only place where the package touches a user's network. While it is active the
network is in ``eval()`` mode, its parameters do not require gradients (so no graph is recorded upstream of the
earliest captured layer and no parameter ``.grad`` can be written) and forward hooks capture the requested outputs
(a forward pre-hook captures the network's input for the layer ``"input"``).
On exit, also when an exception was raised, the hooks are removed and the train/eval state and every
``requires_grad`` flag are restored.

Each captured output is kept as it was produced and the network continues with a *copy* of it, so in-place
operations after the hooked module (``inplace=True`` activations in DynUNet, SegResNet) cannot change the captured
activation or break differentiation with respect to it.

On CPU, the 3D convolutions that are differentiated (their input requires gradients: the part of the network after
an explained layer) read their input in channels-last layout while the capture is active and hand back a
contiguous output, so the network sees the layout it expects. oneDNN's channels-last path computes the same values
and its backward is several times faster than the default layout's for the few-channel full-resolution
convolutions of a segmentation head (see ``docs/performance.md``); convolutions that are not differentiated keep
the default layout, whose forward is as fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .layers import ResolvedLayer, unwrap_network

__all__ = ["ActivationCapture"]


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not (x.requires_grad and x.dim() == 5 and x.device.type == "cpu"):
        return None
    if any(k > 1 for k in getattr(module, "kernel_size", ())):
        return (x.contiguous(memory_format=torch.channels_last_3d), *args[1:])
    return None


def _contiguous_output(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.dim() == 5 and output.device.type == "cpu":
        return output.contiguous()
    return None


def _select(output: Any, selector: int | str | None, layer: ResolvedLayer) -> Any:
    if selector is None:
        return output
    if isinstance(output, torch.Tensor) or not isinstance(output, (tuple, list, dict)):
        raise TypeError(
            f"Layer {layer.key!r} outputs a {type(output).__name__}, which takes no selector; "
            f"use {layer.module_name!r} without '[{selector}]'."
        )
    if isinstance(output, dict):
        if selector in output:
            return output[selector]
    elif isinstance(selector, int) and -len(output) <= selector < len(output):
        return output[selector]
    valid = list(output) if isinstance(output, dict) else f"0..{len(output) - 1}"
    raise ValueError(
        f"Selector [{selector}] of layer {layer.key!r} does not exist: its output is a {type(output).__name__} "
        f"of {len(output)} elements (valid selectors: {valid})."
    )


def _replace(output: Any, selector: int | str | None, value: torch.Tensor) -> Any:
    if selector is None:
        return value
    if isinstance(output, dict):
        return {**output, selector: value}
    replaced = list(output)
    replaced[int(selector)] = value  # a list or tuple: _select checked an integer selector
    return type(output)(replaced) if isinstance(output, tuple) else replaced


class ActivationCapture:
    """Context manager capturing the outputs of ``layers`` on every forward pass of ``network``.

    Args:
        network: the network (wrappers such as DDP are unwrapped for the hooks and state changes).
        layers: resolved layers, see :py:func:`monai_segcam.cam.layers.resolve_layers`.
        differentiable: capture the activations as tensors that require gradients (for gradient-based methods);
            otherwise they are captured detached.

    Example:
        .. code-block:: python

            with torch.enable_grad(), ActivationCapture(net, resolve_layers(net, "bottleneck")) as capture:
                logits = net(image)
                grads = torch.autograd.grad(logits, list(capture.activations.values()), cotangent)
    """

    def __init__(self, network: nn.Module, layers: Sequence[ResolvedLayer], differentiable: bool = True) -> None:
        self.network = unwrap_network(network)
        self.layers = list(layers)
        self.differentiable = differentiable
        self.activations: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._training: list[tuple[nn.Module, bool]] = []
        self._requires_grad: list[tuple[nn.Parameter, bool]] = []

    def _hook(self, layer: ResolvedLayer):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if layer.key in self.activations:
                raise RuntimeError(
                    f"Layer {layer.key!r} ({layer.module_name}) ran more than once in one forward pass (a shared "
                    "module); its activation is ambiguous. Choose a layer that runs once, see list_layers()."
                )
            value = _select(output, layer.selector, layer)
            if not isinstance(value, torch.Tensor):
                kind = type(output).__name__
                raise TypeError(
                    f"Layer {layer.key!r} outputs a {kind}, not a tensor. Select one element with a selector, "
                    f"e.g. '{layer.module_name}[0]', or choose another layer (see list_layers())."
                )
            if not self.differentiable:
                self.activations[layer.key] = value.detach()
                return None
            if not value.requires_grad:
                value = value.detach().requires_grad_(True)
            self.activations[layer.key] = value
            return _replace(output, layer.selector, value.clone())

        return hook

    def _input_hook(self, layer: ResolvedLayer):
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> Any:
            value = args[0] if args else None
            if not isinstance(value, torch.Tensor):
                raise TypeError("The network input must be its first positional argument, a tensor, for input maps.")
            if layer.key in self.activations:
                raise RuntimeError("The network ran more than once in one forward pass; its input is ambiguous.")
            if not self.differentiable:
                self.activations[layer.key] = value.detach()
                return None
            value = value.detach().requires_grad_(True)
            self.activations[layer.key] = value
            return (value.clone(), *args[1:])

        return hook

    def reset(self) -> None:
        """Forget the activations of the previous forward pass."""
        self.activations = {}

    def __enter__(self) -> ActivationCapture:
        self._training = [(module, module.training) for module in self.network.modules()]
        self._requires_grad = [(p, p.requires_grad) for p in self.network.parameters()]
        try:
            self.network.eval()
            for param, _ in self._requires_grad:
                param.requires_grad_(False)
            for layer in self.layers:
                if layer.is_input:
                    self._handles.append(layer.module.register_forward_pre_hook(self._input_hook(layer)))
                else:
                    self._handles.append(layer.module.register_forward_hook(self._hook(layer)))
            for module in self.network.modules():
                if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)) and module.weight.device.type == "cpu":
                    self._handles.append(module.register_forward_pre_hook(_channels_last_input))
                    self._handles.append(module.register_forward_hook(_contiguous_output))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for param, flag in self._requires_grad:
            param.requires_grad_(flag)
        self._requires_grad = []
        for module, training in self._training:
            module.training = training
        self._training = []
        self.activations = {}
