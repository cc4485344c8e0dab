# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Promptable networks explained like any segmentation network: MONAI's VISTA3D with class and point prompts.

VISTA3D (:py:class:`monai.networks.nets.VISTA3D`) answers a *class prompt* (``class_vector``: VISTA3D label ids; the
logits of prompt k are the class embedding of label k times the features of ``up_layers_auto``) or a *point prompt*
(``point_coords``, ``point_labels``: clicks on one object; the logits are the point head's mask logits, from the
features of ``up_layers``). A prompt is a forward argument, so the engines need nothing VISTA3D-specific:

- :py:class:`PromptedVista3D` holds a prompt and calls VISTA3D's own forward with it (``transpose=True``: the output
  is ``(1, n_prompts, *spatial)``), as an ordinary network whose channel k is prompt k. It gets each window's
  coordinates (``patch_coords``) through the engines' ``window_arguments`` hook
  (:py:func:`~monai_segcam.cam.terms.window_arguments`), as the bundle's inferer passes them, and names the head
  that computes the logits (``logits_head``) for role discovery (:py:mod:`~monai_segcam.cam.roles`): ``pre_head`` is
  the image encoder's output that head reads (``image_encoder.up_layers_auto.N.head`` for classes,
  ``image_encoder.up_layers.N.head`` for points), and the encoder, bottleneck and decoder of that branch.
- :py:func:`point_windows` is the window scheme of :py:func:`monai.apps.vista3d.inferer.point_based_window_inferer`:
  one window per click, centred on it (shifted inside the image), outputs *summed* where windows overlap.
- :py:class:`Vista3DSegCAM` explains prompts as the model-zoo bundle's ``Vista3dInferer`` predicts them: class prompts
  (and point prompts without ``use_point_window``) through ``SlidingWindowInfererAdapt(with_coord=True)``'s windows
  (overlap 0.25, constant blending), point prompts through the point windows; whole volumes without a window size.
  ``classes=`` are VISTA3D label ids (the result's class axis follows their order), ``points=`` and
  ``point_labels=`` a point prompt. The explained output is sigmoid-thresholded: ``"pred"`` is logit > 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.utils import ensure_tuple, look_up_option
from torch import nn

from .base import Explainer
from .layers import unwrap_network
from .result import CAMResult
from .sliding_window import SlidingWindowSegCAM
from .windows import GridFactory, WindowGrid

__all__ = ["PromptedVista3D", "point_windows", "Vista3DSegCAM", "is_vista3d", "parse_prompt"]

KINDS = ("classes", "points")


def is_vista3d(network: Any) -> bool:
    """Whether ``network`` is (or wraps) a promptable VISTA3D: an image encoder with a class head and a point head.

    Example:
        >>> is_vista3d(torch.nn.Conv3d(1, 2, 1))
        False
    """
    net = unwrap_network(network) if isinstance(network, nn.Module) else None
    return net is not None and all(hasattr(net, name) for name in ("image_encoder", "class_head", "point_head"))


class PromptedVista3D(nn.Module):
    """A VISTA3D network with a prompt, as a segmentation network ``x (1, C, *spatial) -> (1, n_prompts, *spatial)``.

    Its submodules are VISTA3D's, under the same names (``image_encoder...``, ``class_head...``), so layer names and
    roles read as on VISTA3D; the forward pass is VISTA3D's own with ``transpose=True``.

    Args:
        network: a :py:class:`monai.networks.nets.VISTA3D` (wrappers such as DDP are unwrapped).
        kind: ``"classes"`` (class prompts) or ``"points"`` (a point prompt); it picks the head (``logits_head``)
            and so the branch whose features are explained.
        patch_coords: pass each window's slices as ``patch_coords`` (as the bundle's inferers do); ``False`` for a
            whole-volume forward pass without them.

    Example:
        .. code-block:: python

            prompted = PromptedVista3D(vista, "classes")
            prompted.set_prompt(classes=[3, 5])
            logits = prompted(image)  # (1, 2, *spatial): the logits of labels 3 and 5
    """

    def __init__(self, network: nn.Module, kind: str = "classes", patch_coords: bool = True) -> None:
        super().__init__()
        vista = unwrap_network(network)
        if not is_vista3d(vista):
            raise TypeError(f"PromptedVista3D needs a VISTA3D network, got {type(vista).__name__}.")
        for name, child in vista.named_children():
            self.add_module(name, child)
        self._vista = (vista,)  # not a submodule: its children are this module's, under the same names
        self.kind = look_up_option(kind, KINDS)
        self.logits_head = "class_head" if self.kind == "classes" else "point_head"
        self.patch_coords = patch_coords
        self.prompt: dict[str, torch.Tensor | None] = {}

    @property
    def network(self) -> nn.Module:
        """The VISTA3D network."""
        return self._vista[0]

    def set_prompt(
        self,
        classes: int | Sequence[int] | None = None,
        points: Any = None,
        point_labels: Any = None,
        device: torch.device | str | None = None,
    ) -> int:
        """Set the prompt of the next forward passes; returns the number of output channels.

        Args:
            classes: VISTA3D label ids: the class prompt (``kind="classes"``), or the class of a point prompt
                (``prompt_class``: supported or zero-shot) with ``kind="points"``.
            points: the clicks of one object, voxel coordinates on the network's grid ``(N, 3)``.
            point_labels: one label per click (1 foreground, 0 background; 2/3 for VISTA3D's special classes).
            device: where the prompt tensors go (the network's device by default).
        """
        device = device or next((p.device for p in self.parameters()), torch.device("cpu"))
        ids = None if classes is None else torch.as_tensor([int(c) for c in ensure_tuple(classes)], device=device)
        if self.kind == "classes":
            if ids is None or ids.numel() == 0:
                raise ValueError("A class prompt needs classes=: one or more VISTA3D label ids.")
            if len(set(ids.tolist())) != ids.numel():
                raise ValueError(f"classes {ids.tolist()} has duplicates.")
            self.prompt = {"class_vector": ids[:, None]}
            return ids.numel()
        coords, labels = _points(points, point_labels, device)
        if ids is not None and ids.numel() != 1:
            raise ValueError(f"A point prompt segments one object: give at most one class, got {ids.tolist()}.")
        prompt_class = None if ids is None else ids[:, None]
        self.prompt = {"point_coords": coords, "point_labels": labels, "prompt_class": prompt_class}
        return 1

    def probe_prompt(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The prompt of a forward pass before any was set (role discovery's probe): label 1, or a foreground click at
        the centre of ``x``."""
        if self.kind == "classes":
            return {"class_vector": torch.ones((1, 1), dtype=torch.long, device=x.device)}
        centre = torch.tensor([[[s // 2 for s in x.shape[2:]]]], dtype=torch.float32, device=x.device)
        return {"point_coords": centre, "point_labels": torch.ones((1, 1), dtype=torch.long, device=x.device)}

    def forward(self, x: torch.Tensor, patch_coords: list[Sequence[slice]] | None = None, **kwargs: Any) -> torch.Tensor:
        """VISTA3D's forward with the prompt: ``(1, n_prompts, *spatial)``."""
        if x.shape[0] != 1 and self.kind == "points":  # the engines run each image's windows apart
            raise ValueError(f"VISTA3D's point head takes one window at a time (batch 1), got {x.shape[0]}.")
        prompt = self.prompt or self.probe_prompt(x)
        return self.network(x, patch_coords=patch_coords, **prompt, **kwargs, transpose=True)

    def window_arguments(self, slices: Sequence[tuple[slice, ...]], pad: Sequence[int]) -> dict[str, Any]:
        """The window's coordinates, as MONAI's inferers pass them (``patch_coords``: one window, batch first; the
        grid's padding as ``pad_size``, which shifts the clicks onto the padded grid)."""
        if not self.patch_coords:
            return {}
        coords = [(slice(0, 1), slice(None), *window) for window in slices]
        return {"patch_coords": coords, **({"pad_size": list(pad)} if any(pad) else {})}


def _points(points: Any, point_labels: Any, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks ``(1, N, 3)`` and labels ``(1, N)`` from ``(N, 3)`` / ``(N,)`` (or already batched) values."""
    if points is None or point_labels is None:
        raise ValueError("A point prompt needs points= (N, 3) voxel coordinates and point_labels= (N,) (1 or 0).")
    coords = torch.as_tensor(points, dtype=torch.float32).to(device)
    labels = torch.as_tensor(point_labels).long().to(device)
    coords = coords[None] if coords.ndim == 2 else coords
    labels = labels[None] if labels.ndim == 1 else labels
    if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[2] != 3 or labels.shape != coords.shape[:2]:
        raise ValueError(
            f"points must be (N, 3) and point_labels (N,) for one object, got {tuple(coords.shape)} and "
            f"{tuple(labels.shape)}."
        )
    if not ((labels >= -1) & (labels <= 3)).all():
        raise ValueError(f"point_labels must be -1, 0, 1 (or 2, 3 for special classes), got {labels.tolist()}.")
    return coords, labels


@dataclasses.dataclass
class SummedWindowGrid(WindowGrid):
    """Windows whose outputs add up where they overlap, without weights: the count map is 1 everywhere (MONAI's
    point windows divide the sum by the *covered* mask; a voxel no window covers is NaN there and 0 here)."""

    def count(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.ones((1, 1, *self.padded_shape), dtype=self.importance.dtype, device=device)


def _window_start(p: float, roi: int, size: int) -> int:
    """``monai.apps.vista3d.inferer._get_window_idx_c``: the window of ``roi`` centred on ``p``, inside ``size``."""
    if p - roi // 2 < 0:
        return 0
    if p + roi // 2 > size:
        return size - roi
    return int(p) - roi // 2


def point_windows(points: torch.Tensor, roi_size: Sequence[int]) -> GridFactory:
    """The window scheme of :py:func:`monai.apps.vista3d.inferer.point_based_window_inferer` (``center_only``): the
    image padded to the window where smaller (constant 0, as there), one window per click centred on it, the
    outputs summed (:py:class:`SummedWindowGrid`).

    Args:
        points: the clicks ``(1, N, 3)`` or ``(N, 3)``, voxel coordinates on the image grid.
        roi_size: the window size (positive).

    Example:
        .. code-block:: python

            grid = point_windows(torch.tensor([[10.0, 20.0, 8.0]]), (64, 64, 64))((100, 90, 40))
            grid.slices  # [(slice(0, 64), slice(0, 64), slice(0, 64))]
    """
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != 3 or any(r <= 0 for r in roi):
        raise ValueError(f"Point windows need a positive 3D roi_size, got {tuple(roi_size)}.")
    clicks = torch.as_tensor(points).reshape(-1, 3).tolist()

    def grid(spatial_shape: Sequence[int]) -> WindowGrid:
        spatial = tuple(int(s) for s in spatial_shape)
        pad: list[int] = []
        for s, r in zip(reversed(spatial), reversed(roi)):
            diff = max(r - s, 0)
            pad += [diff // 2, diff - diff // 2]
        before = [pad[2 * (2 - d)] for d in range(3)]
        padded = [s + pad[2 * (2 - d)] + pad[2 * (2 - d) + 1] for d, s in enumerate(spatial)]
        slices = []
        for click in clicks:
            starts = [_window_start(c + b, r, s) for c, b, r, s in zip(click, before, roi, padded)]
            slices.append(tuple(slice(start, start + r) for start, r in zip(starts, roi)))
        return SummedWindowGrid(spatial, roi, pad, slices, torch.ones((1, 1, *roi)))

    return grid


class Vista3DSegCAM(Explainer[CAMResult]):
    """Seg-CAMs of VISTA3D's prompts, windowed as the model-zoo bundle's ``Vista3dInferer`` predicts them.

    Args:
        network: a :py:class:`monai.networks.nets.VISTA3D`.
        layers, method: as :py:class:`~monai_segcam.SegCAM`; roles (``pre_head``, ``bottleneck``, ``encoder.N``,
            ``decoder.N``) are those of the prompt kind's branch.
        roi_size: the window size (the bundle's ``patch_size``); ``None`` explains whole volumes (sizes divisible
            by 16).
        sw_batch_size: windows per pass of class prompts (point prompts: 1).
        use_point_window: point prompts run in one window per click (``point_based_window_inferer``), else in the
            sliding windows of class prompts.
        label_names: VISTA3D label id -> name (the bundle metadata's ``channel_def``), for :py:meth:`class_names`.
        cam_kwargs: other options of the CAM engines (``relu``, ``target``, ``amp``, ...; ``multi_label`` is
            always on: VISTA3D's outputs are sigmoids).

    Returns (when called):
        a :py:class:`~monai_segcam.CAMResult` whose ``classes`` are the prompted label ids in the order given (a
        point prompt: its ``classes`` id, else 0) and whose channels are the prompts.

    Example:
        .. code-block:: python

            explainer = Vista3DSegCAM(vista, roi_size=(128, 128, 128))
            livers = explainer(image, classes=[1, 3]).map  # (1, 2, *spatial): labels 1 and 3
            click = explainer(image, points=[[60, 72, 40]], point_labels=[1]).map  # (1, 1, *spatial)
    """

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str] = "pre_head",
        method: Any = "hirescam",
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 1,
        use_point_window: bool = True,
        label_names: Mapping[Any, str] | None = None,
        **cam_kwargs: Any,
    ) -> None:
        if not is_vista3d(network):
            raise TypeError(f"Vista3DSegCAM needs a VISTA3D network, got {type(unwrap_network(network)).__name__}.")
        if method == "occlusion":
            raise ValueError(
                "occlusion is not supported with VISTA3D prompts (its windows get no patch_coords): use a CAM method "
                "or an input attribution (gradient, integrated_gradients, ...)."
            )
        cam_kwargs.pop("multi_label", None)
        for name in ("flips", "window_grid"):
            if cam_kwargs.get(name) is not None:
                raise ValueError(f"{name}= is not supported with VISTA3D prompts (the prompts are placed on the grid).")
        self.network = network
        self.requested_layers, self.method = layers, method
        self.window_size = _window_size(roi_size)
        self.sw_batch_size, self.use_point_window = sw_batch_size, use_point_window
        self.label_names = {int(k): str(v) for k, v in (label_names or {}).items()}
        self.cam_kwargs = cam_kwargs
        self.multi_label = True  # sigmoid outputs: a prompt segments where its logit is positive
        self.kind = "classes"  # the prompt kind of the last call
        self._engines: dict[str, tuple[PromptedVista3D, SlidingWindowSegCAM]] = {}

    @classmethod
    def from_inferer(cls, inferer: Any, network: nn.Module, **kwargs: Any) -> Vista3DSegCAM:
        """Build from the bundle's ``Vista3dInferer`` (its ``roi_size``, ``sw_batch_size``, ``use_point_window``).

        Example:
            .. code-block:: python

                explainer = Vista3DSegCAM.from_inferer(parser.get_parsed_content("inferer"), vista)
        """
        settings = {name: getattr(inferer, name) for name in ("roi_size", "sw_batch_size", "use_point_window")
                    if hasattr(inferer, name)}  # fmt: skip
        return cls(network, **{**settings, **kwargs})

    def class_names(self, classes: Sequence[int]) -> list[str]:
        """The label names of VISTA3D label ids (``label_names``; the id itself when unknown).

        Example:
            .. code-block:: python

                Vista3DSegCAM(vista, label_names={"3": "spleen"}).class_names([3, 200])  # ['spleen', '200']
        """
        return [self.label_names.get(int(c), str(int(c))) for c in classes]

    @property
    def method_name(self) -> str:
        """The CAM method's name (e.g. ``"hirescam"``)."""
        return self.engine("classes")[1].rule.method_name

    def __getattr__(self, name: str) -> Any:
        """The engine settings and state of the last call's prompt kind (``layers``, ``terms``, ``roi_size``,
        ``overlap``, ``activation_budget``...; the layer keys are those requested, for either kind)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.engine(self.kind)[1], name)

    def predict(
        self, image: torch.Tensor, classes: Any = None, points: Any = None, point_labels: Any = None
    ) -> torch.Tensor:
        """The prompts' logits ``(B, n_prompts, *spatial)`` with this explainer's windows (0 outside the point
        windows, where MONAI's point inferer gives NaN).

        Example:
            .. code-block:: python

                logits = Vista3DSegCAM(vista, roi_size=(128, 128, 128)).predict(ct, classes=[3, 5])  # (1, 2, ...)
        """
        engine = self._prompted(classes, points, point_labels)[1]
        return engine.predict(image)

    def _prompted(self, classes: Any, points: Any, point_labels: Any) -> tuple[int, SlidingWindowSegCAM]:
        """Set the prompt on its kind's engine (and the point windows): the number of prompts and the engine."""
        self.kind = "points" if points is not None else "classes"
        prompted, engine = self.engine(self.kind)
        n = prompted.set_prompt(classes, points, point_labels)
        if self.kind == "points" and self.window_size is not None and self.use_point_window:
            assert isinstance(engine, SlidingWindowSegCAM)
            engine.window_grid = point_windows(torch.as_tensor(prompted.prompt["point_coords"]), self.window_size)
        return n, engine

    @property
    def result_keys(self) -> tuple[str, ...]:
        """The layer keys of the last call's prompt kind (those requested, for either kind)."""
        return self.engine(self.kind)[1].result_keys

    def settings(self) -> dict[str, Any]:
        """The settings of the last call's prompt kind's engine, and whether clicks get windows of their own."""
        return {**self.engine(self.kind)[1].settings(), "use_point_window": self.use_point_window}

    def prompt_arguments(self, output: Any, index: int) -> dict[str, Any]:
        """The prompt of batch item ``index`` in an evaluator's output, as the bundle's ``Vista3dEvaluator`` puts it
        there: ``label_prompt`` ``(B, n, 1)``, ``points`` ``(B, 1, N, 3)`` on the network grid and ``point_labels``
        ``(B, 1, N)``; ``{}`` when the output holds none (the handler's ``classes`` are then the class prompt).

        Example:
            .. code-block:: python

                explainer.prompt_arguments({"label_prompt": torch.tensor([[[3], [5]]])}, 0)  # {'classes': [3, 5]}
        """

        def item(key: str) -> torch.Tensor | None:
            value = output.get(key) if isinstance(output, Mapping) else None
            return None if value is None else torch.as_tensor(value)[index]

        labels, points, point_labels = item("label_prompt"), item("points"), item("point_labels")
        classes = None if labels is None else [int(c) for c in labels.flatten().tolist()]
        if points is not None:
            flat_labels = None if point_labels is None else point_labels.flatten()
            return {"classes": classes, "points": points.reshape(-1, 3), "point_labels": flat_labels}
        return {} if classes is None else {"classes": classes}

    def engine(self, kind: str) -> tuple[PromptedVista3D, SlidingWindowSegCAM]:
        """The prompted network and the CAM engine of a prompt kind (built once; role discovery traces the branch)."""
        if kind not in self._engines:
            roi = self.window_size
            prompted = PromptedVista3D(self.network, kind, patch_coords=roi is not None)
            common = {"layers": self.requested_layers, "method": self.method, "multi_label": True, **self.cam_kwargs}
            engine: SlidingWindowSegCAM
            if roi is None:  # one window: the whole volume (as SegCAM, with the window settings a door may pass)
                engine = SlidingWindowSegCAM(prompted, -1, **common)
            elif kind == "points" and self.use_point_window:
                engine = SlidingWindowSegCAM(prompted, roi, sw_batch_size=1, overlap=0.0, **common)
            else:  # SlidingWindowInfererAdapt's defaults: overlap 0.25, constant blending
                batch = self.sw_batch_size if kind == "classes" else 1
                engine = SlidingWindowSegCAM(prompted, roi, sw_batch_size=batch, overlap=0.25, **common)
            self._engines[kind] = (prompted, engine)
        return self._engines[kind]

    def __call__(
        self,
        image: torch.Tensor,
        classes: int | Sequence[int] | None = None,
        region: Any = "pred",
        pred: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        contrast: int | None = None,
        points: Any = None,
        point_labels: Any = None,
    ) -> CAMResult:
        """Explain a class prompt (``classes``: VISTA3D label ids) or a point prompt (``points`` ``(N, 3)`` on the
        image grid, ``point_labels`` ``(N,)``; ``classes``: its prompt class, optional) on ``image`` ``(B, C,
        *spatial)`` (each image's windows run apart: VISTA3D takes batch 1).
        ``label`` is a label map of VISTA3D ids (``"label"``, ``"fp"``, ``"fn"`` regions; for a point prompt without
        a class, its foreground); ``pred`` the prompts' logits ``(1, n_prompts, *spatial)``."""
        if contrast is not None:
            raise ValueError("contrast= is not supported with VISTA3D prompts: explain each prompt on its own.")
        n, engine = self._prompted(classes, points, point_labels)
        kind = self.kind
        ids = tuple(int(c) for c in ensure_tuple(classes)) if classes is not None else (0,)
        if label is not None:
            label = _prompt_label(torch.as_tensor(label), ids, kind == "points" and classes is None)
        if pred is not None and pred.is_floating_point():  # NaN outside the point windows: 0 here, out of "pred"
            pred = torch.nan_to_num(torch.as_tensor(pred), nan=0.0)
        result = engine(image, list(range(n)), region, pred, label)
        return dataclasses.replace(result, classes=ids)


def _window_size(roi_size: Any) -> tuple[int, ...] | None:
    """The window size, ``None`` (the whole volume) when none is given or every component is non-positive (an
    inferer's "image size")."""
    if roi_size is None:
        return None
    roi = tuple(int(r) for r in ensure_tuple(roi_size))
    if all(r <= 0 for r in roi):
        return None
    if any(r <= 0 for r in roi) or len(roi) not in (1, 3):
        raise ValueError(f"VISTA3D windows need a positive 3D roi_size, got {roi_size}.")
    return roi * 3 if len(roi) == 1 else roi


def parse_prompt(texts: Sequence[str] | None) -> dict[str, Any]:
    """The prompt of ``--prompt`` strings as explainer arguments: ``class:N[,M...]`` (VISTA3D label ids) and
    ``point:I,J,K[:label]`` (a click, label 1 by default; repeat it for several clicks on one object). Clicks with
    one class give the point head that class.

    Example:
        >>> parse_prompt(["class:3,5"])
        {'classes': [3, 5]}
        >>> parse_prompt(["point:10,20,5", "point:12,22,5:0"])
        {'points': [[10.0, 20.0, 5.0], [12.0, 22.0, 5.0]], 'point_labels': [1, 0]}
    """
    prompt: dict[str, Any] = {}
    for text in texts or []:
        kind, _, value = str(text).partition(":")
        try:
            if kind == "class":
                prompt.setdefault("classes", []).extend(int(c) for c in value.split(","))
            elif kind == "point":
                coords, _, label = value.partition(":")
                point = [float(c) for c in coords.split(",")]
                if len(point) != 3:
                    raise ValueError
                prompt.setdefault("points", []).append(point)
                prompt.setdefault("point_labels", []).append(int(label) if label else 1)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"Cannot read the prompt {text!r}: give class:N[,M] (label ids) or point:I,J,K[:label] (a voxel, label "
                "1 foreground or 0 background)."
            ) from None
    return prompt


def _prompt_label(label: torch.Tensor, ids: Sequence[int], foreground: bool) -> torch.Tensor:
    """A label map of VISTA3D ids ``(B, 1, *spatial)`` as one channel per prompt (one-hot order of ``ids``)."""
    if label.shape[1] != 1:
        return label
    if foreground:
        return (label > 0).float()
    return torch.cat([label == c for c in ids], dim=1).float()
