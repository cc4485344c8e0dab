# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Layer roles (``encoder.N``, ``bottleneck``, ``decoder.N``, ``pre_head``) discovered from one traced forward pass.

No list of architectures: the network runs once, in ``eval()`` mode under ``torch.no_grad()``, on a small random
probe input, with a hook on every module recording the order of the calls, which call runs inside which, and the
shape of every *feature map* (a floating tensor ``(B, C, *spatial)`` with more than one voxel and no dimension larger
than the input's: a global pooling or a padding is no resolution); a torch function mode records when each output
is used. Hooks and mode are removed and the train/eval flags restored afterwards. Resolution is a feature map's
number of voxels. The rule (``docs/layers.md`` shows what it finds on 13 networks):

1. **Stages.** A module call is a stage when it outputs a feature map, its module runs once per forward pass, its
   output is used afterwards (an unused auxiliary head is not a stage) and is not one of its inputs (``Identity``),
   it is not a skip merge (a module returning its own input concatenated with new channels, like MONAI's
   ``SkipConnection``: its inner module is looked at instead), and the path through it never goes down and comes
   back up (no feature map inside it, counting its first input and its output, is coarser than one before and one
   after it: a whole U-Net level is not a stage, a block that downsamples or upsamples is). Only the outermost such
   calls count; modules returning lists, tuples, dicts or tokens (a transformer backbone, nnU-Net's encoder) are
   looked into.
2. **Head and pre_head.** The head is the stage whose output is the logits (the full-resolution output, see
   :py:func:`~monai_segcam.cam.selection.select_logits`); ``pre_head`` is the module that produced the head's input
   (a stage when one did, else the outermost module that did; the last stage when it was made outside any module).
   A network whose logits are computed inside a head rather than output by a module (VISTA3D's class and point heads
   multiply features by prompt embeddings) names that head in a ``logits_head`` attribute: the call of that module is
   the head (see :py:class:`~monai_segcam.cam.prompts.PromptedVista3D`).
3. **Decoder, bottleneck, encoder.** Walking back from the last stage before the head while the resolution does not
   increase gives the decoder's climb; ``bottleneck`` is the last stage at the coarsest resolution of that climb;
   the ``decoder.N`` are the stages after it. Walking back from the bottleneck while the resolution does not
   decrease gives the ``encoder.N``. Consecutive stages at one resolution count once, as the last of them (the
   feature map a resolution level hands on). Stages before the encoder's descent (a transformer backbone whose
   outputs feed separate encoder blocks, as in SwinUNETR) get no role but keep their names.

The result is cached per network object and probe shape, so building several engines traces once; a call without
a probe shape reuses the roles found on any earlier one (a network whose input size is fixed, such as UNETR, is
traced once on its size, e.g. by ``list_layers`` or a sliding window, and the roles hold for every later engine).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .selection import output_options, select_logits

__all__ = [
    "Stage",
    "LayerRoles",
    "LayerDiscoveryError",
    "TracedCall",
    "trace_network",
    "roles_of_trace",
    "discover_roles",
    "probe_shapes",
]

PROBE_SIZES = (64, 96, 128)
"""Edge lengths tried, in order, when no probe shape is given (multiples of 32: networks downsampling five times
accept them; 96 is UNETR's usual ``img_size``)."""

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class LayerDiscoveryError(ValueError):
    """The roles of a network cannot be discovered (the probe input fails, or the trace is ambiguous); the message
    says why and lists the candidates.

    Example:
        .. code-block:: python

            try:
                roles = discover_roles(network)
            except LayerDiscoveryError as error:
                print(error)  # e.g. the probe shapes tried and why each failed
    """


class Stage(NamedTuple):
    """A stage of the traced forward pass: its module name and output shape ``(B, C, *spatial)``."""

    name: str
    shape: tuple[int, ...]


@dataclass
class TracedCall:
    """One module call of a traced forward pass (see :py:func:`trace_network`).

    Attributes:
        name: the module's ``named_modules()`` name (``""`` for the traced network itself).
        module: the module.
        start, end: the order in which the call started and returned.
        parent: index (``start``) of the enclosing call, ``None`` for the network itself.
        inputs: the feature maps among the call's arguments.
        output: what the call returned.
        skip_merge: the output is the first (or last) feature input concatenated with new channels.
        last_use: when an operation last took the output as an argument (in number of calls returned by then).
    """

    name: str
    module: nn.Module = field(repr=False)
    start: int
    end: int = -1
    parent: int | None = None
    inputs: list[torch.Tensor] = field(default_factory=list, repr=False)
    output: Any = field(default=None, repr=False)
    skip_merge: bool = False
    last_use: int = -1


@dataclass(frozen=True)
class LayerRoles:
    """The discovered roles of a network.

    Attributes:
        roles: role -> module name, in the order ``encoder.0.. bottleneck decoder.0.. pre_head``.
        stages: every stage of the forward pass in order, with its output shape (for tables and error messages).
        head: the name of the module producing the logits.
        probe_shape: the shape of the probe input that was traced.
        missing: role -> why it could not be discovered (e.g. no stage is coarser than the input).
    """

    roles: dict[str, str]
    stages: tuple[Stage, ...]
    head: str
    probe_shape: tuple[int, ...]
    missing: dict[str, str] = field(default_factory=dict)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _voxels(tensor: torch.Tensor) -> int:
    return math.prod(tensor.shape[2:])


def probe_shapes(network: nn.Module, example_shape: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """The probe input shapes to try, in order.

    ``example_shape`` is used alone when given, either whole ``(B, C, *spatial)`` or as a spatial size (a window's
    ``roi_size``); otherwise ``(1, C) + (s,) * d`` for the edge lengths ``s`` of :py:data:`PROBE_SIZES`. ``C`` is the
    network's ``in_channels`` attribute or the fewest input channels of its convolutions, ``d`` their number of
    spatial dimensions.

    Example:
        .. code-block:: python

            probe_shapes(UNet(3, 1, 3, (8, 16, 32), (2, 2)))  # [(1, 1, 64, 64, 64), (1, 1, 96, 96, 96), ...]
            probe_shapes(UNet(3, 1, 3, (8, 16, 32), (2, 2)), (96, 96, 48))  # [(1, 1, 96, 96, 48)]
    """
    convs = [m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    channels = getattr(network, "in_channels", None)
    channels = channels if isinstance(channels, int) else min((c.in_channels for c in convs), default=None)
    dims = len(convs[0].kernel_size) if convs else None
    if example_shape is not None:
        shape = tuple(int(s) for s in example_shape)
        return [(1, channels, *shape) if channels is not None and len(shape) == dims else shape]
    if channels is None or dims is None:
        raise LayerDiscoveryError(
            f"{type(network).__name__} has no convolution to tell its input channels and dimensions from; "
            "give the probe shape (B, C, *spatial), e.g. list_layers(network, (1, 1, 96, 96, 96))."
        )
    return [(1, channels) + (size,) * dims for size in PROBE_SIZES]


class _Tracer(TorchFunctionMode):
    """Hooks on every module recording :py:class:`TracedCall` s, and the last time each tensor was used by an
    operation (a torch function mode); a context manager."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.names = {id(m): name for name, m in network.named_modules()}  # the first name of a shared module
        self.calls: list[TracedCall] = []
        self.last_use: dict[int, int] = {}
        self._open: list[TracedCall] = []
        self._handles: list[Any] = []
        self._ends = 0
        self._in_hook = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if not self._in_hook and _tensors(result):
            for tensor in _tensors((args, kwargs)):
                self.last_use[id(tensor)] = self._ends
        return result

    def _pre(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        self._in_hook = True
        parent = self._open[-1].start if self._open else None
        inputs = [t for t in _tensors((args, kwargs)) if t.is_floating_point() and t.ndim > 2]
        call = TracedCall(self.names[id(module)], module, len(self.calls), parent=parent, inputs=inputs)
        self.calls.append(call)
        self._open.append(call)
        self._in_hook = False

    def _post(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        self._in_hook = True
        call = self._open.pop()
        call.output, call.end = output, self._ends
        self._ends += 1
        first = call.inputs[0] if call.inputs else None
        if isinstance(output, torch.Tensor) and first is not None and output.ndim == first.ndim:
            c = first.shape[1]
            if output.shape[2:] == first.shape[2:] and output.shape[1] > c:
                call.skip_merge = torch.equal(output[:, :c], first) or torch.equal(output[:, -c:], first)
        self._in_hook = False

    def __enter__(self) -> _Tracer:
        for module in self.network.modules():
            self._handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post, with_kwargs=True))
        return super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        super().__exit__(*exc_info)


def trace_network(
    network: nn.Module, input_shape: Sequence[int], device: torch.device | str | None = None
) -> tuple[list[TracedCall], Any]:
    """Run ``network`` once on a random probe of ``input_shape`` with every module call recorded.

    The network runs in ``eval()`` mode under ``torch.no_grad()`` on ``device`` (default: the device of its first
    parameter) in the dtype of its first parameter; hooks are removed and train/eval flags restored afterwards, also
    when the forward pass raises.

    Returns:
        the calls in the order they started (``last_use`` filled in), and the network's output.

    Example:
        .. code-block:: python

            calls, output = trace_network(net, (1, 1, 64, 64, 64))
            [(call.name, tuple(call.output.shape)) for call in calls if isinstance(call.output, torch.Tensor)]
    """
    param = next(network.parameters(), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    probe = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    training = [(module, module.training) for module in network.modules()]
    tracer = _Tracer(network)
    try:
        network.eval()
        with torch.no_grad(), tracer:
            output = network(probe)
    finally:
        for module, flag in training:
            module.training = flag
    for call in tracer.calls:
        call.last_use = tracer.last_use.get(id(call.output), -1)
    return tracer.calls, output


class _FeatureMap:
    """Whether a value is a feature map on the probe's grid: a floating tensor ``(B, C, *spatial)`` with more than
    one voxel (a global pooling is no resolution) and no dimension larger than the probe's (a padding is none)."""

    def __init__(self, probe_shape: tuple[int, ...]) -> None:
        self.probe_shape = probe_shape

    def __call__(self, value: Any) -> bool:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.ndim != len(self.probe_shape):
            return False
        spatial = value.shape[2:]
        return value.shape[0] == self.probe_shape[0] and math.prod(spatial) > 1 and all(
            s <= p for s, p in zip(spatial, self.probe_shape[2:])
        )


def _has_valley(values: list[int]) -> bool:
    """Whether some value is strictly below both an earlier and a later one (the path went down and came back)."""
    suffix = [0] * (len(values) + 1)
    for k in range(len(values) - 1, -1, -1):
        suffix[k] = max(values[k], suffix[k + 1])
    prefix = 0
    for k, value in enumerate(values):
        if value < prefix and value < suffix[k + 1]:
            return True
        prefix = max(prefix, value)
    return False


def _stage_calls(calls: list[TracedCall], outputs: set[int], is_map: _FeatureMap) -> list[TracedCall]:
    """The stages (rule 1) in the order they returned."""
    runs: dict[int, int] = {}
    for call in calls:
        runs[id(call.module)] = runs.get(id(call.module), 0) + 1
    inner: list[list[int]] = [[] for _ in calls]  # feature-map voxels computed inside each call, in return order
    for call in sorted(calls, key=lambda c: c.end):
        parent = call.parent
        while parent is not None and is_map(call.output):
            inner[parent].append(_voxels(call.output))
            parent = calls[parent].parent

    def candidate(call: TracedCall) -> bool:
        if call.parent is None or runs[id(call.module)] > 1 or call.skip_merge or not is_map(call.output):
            return False
        if any(call.output is t for t in call.inputs):  # a pass-through (Identity) adds nothing
            return False
        if call.last_use <= call.end and id(call.output) not in outputs:  # a dead end (an unused auxiliary head)
            return False
        first = [_voxels(call.inputs[0])] if call.inputs and is_map(call.inputs[0]) else []
        return not _has_valley(first + inner[call.start] + [_voxels(call.output)])

    flags = [candidate(call) for call in calls]
    stages = []
    for call in calls:
        parent, nested = call.parent, False
        while parent is not None and not nested:
            nested, parent = flags[parent], calls[parent].parent
        if flags[call.start] and not nested:
            stages.append(call)
    return sorted(stages, key=lambda c: c.end)


def _last_per_resolution(stages: list[TracedCall]) -> list[TracedCall]:
    res = [_voxels(s.output) for s in stages]
    return [s for k, s in enumerate(stages) if k + 1 == len(stages) or res[k + 1] != res[k]]


def _pre_head(calls: list[TracedCall], body: list[TracedCall], head: TracedCall) -> TracedCall | None:
    """The call that produced the head's input: a stage when one did, else the outermost module called once."""
    if not head.inputs:
        return None
    producers = [c for c in calls if c.output is head.inputs[0] and c.parent is not None and c.end < head.start]
    staged = [c for c in producers if any(c is s for s in body)]
    once = [c for c in producers if sum(1 for d in calls if d.module is c.module) == 1]
    candidates = staged or once
    return candidates[-1] if candidates else None


def _u_shape(body: list[TracedCall]) -> tuple[list[TracedCall], TracedCall, list[TracedCall]]:
    """Rule 3: encoders, bottleneck and decoders among the stages before the head."""
    res = [_voxels(s.output) for s in body]
    i = len(body) - 1
    while i > 0 and res[i - 1] <= res[i]:  # back along the decoder's climb
        i -= 1
    b = max(k for k in range(i, len(body)) if res[k] == res[i])
    j = b
    while j > 0 and res[j - 1] >= res[j]:  # back along the encoder's descent
        j -= 1
    return _last_per_resolution(body[j:b]), body[b], _last_per_resolution(body[b + 1 :])


def _describe_stages(stages: Sequence[TracedCall]) -> str:
    return ", ".join(f"{s.name} {tuple(s.output.shape)}" for s in stages[-12:]) or "none"


def roles_of_trace(calls: list[TracedCall], output: Any, probe_shape: Sequence[int]) -> LayerRoles:
    """The roles found in a trace of :py:func:`trace_network` (rules 1-3 of this module's docstring).

    Raises:
        LayerDiscoveryError: no module produces the logits, or nothing is computed before the head.

    Example:
        .. code-block:: python

            calls, output = trace_network(net, (1, 1, 64, 64, 64))
            roles_of_trace(calls, output, (1, 1, 64, 64, 64)).roles["pre_head"]
    """
    probe_shape = tuple(int(s) for s in probe_shape)
    logits = select_logits(output, None, probe_shape[2:])
    outputs = {id(t) for _, t in output_options(output)}
    stages = _stage_calls(calls, outputs, _FeatureMap(probe_shape))
    heads = [s for s in stages if s.output is logits] or [s for s in stages if s.output.shape == logits.shape]
    named = getattr(calls[0].module, "logits_head", None)  # a head computing the logits inside it (promptable)
    if not heads and isinstance(named, str):
        heads = [c for c in calls if c.name == named]
    if not heads:
        raise LayerDiscoveryError(
            f"No module of {type(calls[0].module).__name__} outputs the logits {tuple(logits.shape)} (they are "
            f"computed outside any module), so its head and pre_head are unknown. Stages: {_describe_stages(stages)}."
        )
    head = heads[-1]
    body = [s for s in stages if s.end < head.start and id(s.output) not in outputs]
    pre = _pre_head(calls, body, head) or (body[-1] if body else None)
    if pre is None:
        raise LayerDiscoveryError(f"Nothing is computed before the head {head.name!r}; stages: {_describe_stages(stages)}.")
    roles: dict[str, str] = {}
    missing: dict[str, str] = {}
    if min((_voxels(s.output) for s in body), default=math.inf) >= math.prod(probe_shape[2:]):
        reason = "no stage before the head is coarser than the input, so there is no encoder, bottleneck or decoder"
        missing = {"bottleneck": reason, "encoder.N": reason, "decoder.N": reason}
    else:
        encoders, bottleneck, decoders = _u_shape(body)
        roles.update({f"encoder.{n}": s.name for n, s in enumerate(encoders)})
        roles["bottleneck"] = bottleneck.name
        roles.update({f"decoder.{n}": s.name for n, s in enumerate(decoders)})
    roles["pre_head"] = pre.name
    table = tuple(Stage(s.name, tuple(s.output.shape)) for s in stages)
    return LayerRoles(roles, table, head.name, tuple(probe_shape), missing)


def discover_roles(network: nn.Module, example_shape: Sequence[int] | None = None) -> LayerRoles:
    """Discover the layer roles of ``network`` from one traced forward pass (rules in this module's docstring).

    Args:
        network: the segmentation network (not wrapped: see :py:func:`~monai_segcam.cam.layers.unwrap_network`).
        example_shape: the probe's shape ``(B, C, *spatial)`` or spatial size, e.g. a sliding window's
            ``roi_size``; without it, the roles found earlier for this network on any shape are returned, or else
            the shapes of :py:func:`probe_shapes` are tried in order until one runs.

    Raises:
        LayerDiscoveryError: no probe shape runs, or no module produces the logits.

    Example:
        .. code-block:: python

            roles = discover_roles(BasicUNet(3, 1, 3, features=(4, 4, 8, 8, 16, 4)))
            roles.roles["bottleneck"], roles.roles["pre_head"]  # ('down_4', 'upcat_1')
    """
    cache = _CACHE.setdefault(network, {})
    key = None if example_shape is None else tuple(int(s) for s in example_shape)
    if key is None and cache:  # roles found on a shape given earlier (e.g. a window) hold for any input
        return next(iter(cache.values()))
    if key not in cache:
        errors = []
        for shape in probe_shapes(network, example_shape):
            try:
                calls, output = trace_network(network, shape)
            except Exception as exc:  # the network refuses this size: try the next one
                errors.append(f"{shape}: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")
                continue
            cache[key] = roles_of_trace(calls, output, shape)
            break
        else:
            raise LayerDiscoveryError(
                f"{type(network).__name__} did not run on a random probe input, so its layer roles cannot be discovered "
                f"({'; '.join(errors)}). Give a shape it accepts, e.g. list_layers(network, (1, C, *roi_size)), or "
                "name the layers by their named_modules() names."
            )
    return cache[key]
