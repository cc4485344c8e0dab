# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""One request, one explainer: :py:class:`ExplainRequest`, what a front door asks for, and :py:func:`make_segcam`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from monai.utils import ensure_tuple
from torch import nn

from ..cam.base import Explainer
from ..cam.methods import CAMRule
from ..cam.windows import WindowSettings, inferer_window_settings
from .registry import ExplainerKind, explainer_kind

__all__ = ["ExplainRequest", "make_segcam"]


@dataclass(frozen=True)
class ExplainRequest:
    """What a front door asks for: the method, the layers, the call's classes and region, the window settings shared
    by every explainer kind, and the kind's other options. It builds the explainer (:py:meth:`build`) and says,
    before any network is at hand, the keys its result will have (:py:attr:`result_keys`).

    Attributes:
        method: a method name of :py:func:`~monai_segcam.explainers.explainer_methods` or a
            :py:class:`~monai_segcam.cam.CAMRule`.
        layers: the requested layer name(s) or role(s).
        classes: the explained class indices (the call's default).
        region: the explained region (the call's default), see :py:func:`~monai_segcam.cam.regions.as_region`.
        windows: the sliding-window settings; ``None`` explains whole volumes.
        options: the kind's other options (``target``, ``relu``, ``amp``, ``mask_size``...).
        inferer: the inferer the windows come from, for kinds that reproduce another one (VISTA3D's
            ``Vista3dInferer``); ``None`` otherwise.

    Example:
        .. code-block:: python

            request = ExplainRequest.from_inferer(SlidingWindowInferer(roi_size=(96, 96, 96)), method="occlusion",
                                                  options={"mask_size": 16})
            request.result_keys  # ('input',)
            result = request.build(net)(image, classes=request.classes, region=request.region)
    """

    method: str | CAMRule = "hirescam"
    layers: str | Sequence[str] = "pre_head"
    classes: tuple[int, ...] = (1,)
    region: Any = "pred"
    windows: WindowSettings | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    inferer: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", self.layers if isinstance(self.layers, str) else tuple(self.layers))
        object.__setattr__(self, "classes", tuple(int(c) for c in ensure_tuple(self.classes)))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        self.kind  # noqa: B018 (an unknown method fails here, naming the close ones)

    @classmethod
    def from_inferer(cls, inferer: Inferer | None, **fields: Any) -> ExplainRequest:
        """The request with the window settings of ``inferer``: a ``SlidingWindowInferer`` (e.g. a bundle's
        ``@inferer``, or one wrapped by an inferer keeping it in ``.inferer``, as
        :py:class:`~monai_segcam.inferers.SegCAMInferer` does), ``None`` or a ``SimpleInferer`` (whole volumes).
        Another inferer is kept in :py:attr:`inferer` for the kinds that reproduce it; the others refuse it when
        they are built.

        Example:
            .. code-block:: python

                ExplainRequest.from_inferer(bundle_inferer, method="gradcam", layers=("bottleneck", "pre_head"))
        """
        wrapped = getattr(inferer, "inferer", None)
        inferer = wrapped if isinstance(wrapped, Inferer) else inferer
        windows = inferer_window_settings(inferer) if isinstance(inferer, SlidingWindowInferer) else None
        return cls(windows=windows, inferer=inferer, **fields)

    def check_inferer(self) -> None:
        """Raise unless the windows of :py:attr:`inferer` are reproduced by :py:attr:`windows` (a
        ``SlidingWindowInferer``, a ``SimpleInferer`` or none).

        Raises:
            TypeError: for another inferer.
        """
        if self.inferer is not None and not isinstance(self.inferer, (SimpleInferer, SlidingWindowInferer)):
            raise TypeError(
                f"Cannot reproduce a {type(self.inferer).__name__} for CAMs: use a SimpleInferer or a "
                "SlidingWindowInferer (or pass `inferer=None` to explain whole volumes)."
            )

    @property
    def kind(self) -> ExplainerKind:
        """The registry entry of :py:attr:`method`."""
        return explainer_kind(self.method)

    @property
    def method_name(self) -> str:
        """The method's name in results and file names, by the one rule every front door follows: a name as given; a
        rule or explainer its own ``method_name`` (:py:attr:`~monai_segcam.cam.CAMRule.method_name`: the registered
        name, else the class name); anything else its class name."""
        if isinstance(self.method, str):
            return self.method
        name = getattr(self.method, "method_name", None)
        return name if isinstance(name, str) and name else type(self.method).__name__

    @property
    def result_keys(self) -> tuple[str, ...]:
        """The keys of the explainer's result (the layer names, or e.g. ``("input",)`` for occlusion)."""
        keys = self.kind.result_keys
        return tuple(keys(self)) if keys is not None else tuple(ensure_tuple(self.layers))

    @property
    def single(self) -> bool:
        """Whether one map was asked for (``layers`` a string), or the kind gives one map whatever the layers (a map of
        the input): doors then return a map, not a dict."""
        keys = self.result_keys
        return isinstance(self.layers, str) or (len(keys) == 1 and keys != tuple(ensure_tuple(self.layers)))

    @property
    def result_layers(self) -> str | tuple[str, ...]:
        """The result keys as the doors name their outputs (:py:func:`~monai_segcam.outputs.cam_output_keys`): the
        one key as a string when a single map was asked for."""
        return self.result_keys[0] if self.single else self.result_keys

    def with_options(self, **options: Any) -> ExplainRequest:
        """This request with the options its kind takes from ``options`` (a door's common option set: each kind
        keeps the names of :py:attr:`ExplainerKind.options`); ``None`` values are dropped.

        Example:
            .. code-block:: python

                ExplainRequest(method="occlusion").with_options(mask_size=16, activation_budget=None, amp=False)
        """
        kept = {k: v for k, v in options.items() if k in self.kind.options and v is not None}
        return dataclasses.replace(self, options={**self.options, **kept})

    def build(self, network: nn.Module | Sequence[nn.Module]) -> Explainer:
        """The explainer of ``network`` (one module, or several as an ensemble)."""
        return self.kind.build(network, self)

    def window_kwargs(self) -> dict[str, Any]:
        """The window settings as engine keyword arguments (``{}`` for whole volumes), with the options' overrides
        of them (e.g. a command line's ``--roi-size``)."""
        names = {f.name for f in dataclasses.fields(WindowSettings)}
        base = {} if self.windows is None else self.windows.as_kwargs()
        return {**base, **{k: v for k, v in self.options.items() if k in names}}

    def kind_options(self) -> dict[str, Any]:
        """The options that are not window settings."""
        names = {f.name for f in dataclasses.fields(WindowSettings)}
        return {k: v for k, v in self.options.items() if k not in names}


def make_segcam(network: nn.Module | Sequence[nn.Module], inferer: Inferer | None = None, **cam_kwargs: Any) -> Any:
    """The explainer matching an inferer: for a CAM method :py:class:`~monai_segcam.SlidingWindowSegCAM` with the
    window settings of a ``SlidingWindowInferer`` (or of the one wrapped by a
    :py:class:`~monai_segcam.inferers.SegCAMInferer`), else :py:class:`~monai_segcam.SegCAM` on whole volumes;
    ``method="occlusion"`` (or any registered kind) gives that kind's explainer with the same windows.

    Args:
        network: the segmentation network.
        inferer: the inferer that makes the prediction, or ``None`` (whole volume).
        cam_kwargs: ``layers``, ``method``, ... of the explainer (``mask_size``, ``stride``, ``baseline``... of
            occlusion).

    Example:
        .. code-block:: python

            engine = make_segcam(net, SlidingWindowInferer(roi_size=(96, 96, 96)), layers="pre_head")
            occlusion = make_segcam(net, SlidingWindowInferer(roi_size=(96, 96, 96)), method="occlusion", mask_size=16)
    """
    method, layers = cam_kwargs.pop("method", "hirescam"), cam_kwargs.pop("layers", "pre_head")
    return ExplainRequest.from_inferer(inferer, method=method, layers=layers, options=cam_kwargs).build(network)

