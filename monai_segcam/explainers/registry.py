# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The registry of explainer kinds: how each method name is built and which result keys it gives.

Every front door turns what its user wrote into an :py:class:`~monai_segcam.explainers.ExplainRequest`, and the request
asks this registry for the method's :py:class:`ExplainerKind`. Kind-specific facts (occlusion's single ``"input"``
key, its occluder options) live in the kind's entry, never in a door. Every CAM rule registered with
:py:func:`~monai_segcam.cam.register_method` is a method of the CAM engines' kind; other kinds are registered here with
:py:func:`register_explainer`, or by a package through the ``monai_segcam.explainers`` entry-point group (an entry
point naming a module, loaded when a method name is not found otherwise), so that every process (the command line,
``python -m monai.bundle``) finds them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module, metadata
from typing import Any

from ..cam.base import Explainer
from ..cam.methods import CAMRule

__all__ = ["ExplainerKind", "register_explainer", "explainer_kind", "explainer_methods", "ENTRY_POINT_GROUP", "CAM_KIND"]

ENTRY_POINT_GROUP = "monai_segcam.explainers"
CAM_KIND = "cam"  # the kind of the CAM engines: every registered CAM rule, and rule instances

Builder = Callable[[Any, Any], Explainer]


@dataclass(frozen=True)
class ExplainerKind:
    """One kind of explainer: how a request builds it and what its result holds.

    Attributes:
        name: the method name it answers (``--method``, ``method=``).
        build: ``build(network, request) -> explainer``: the explainer of ``network`` (one module or an ensemble)
            for an :py:class:`~monai_segcam.explainers.ExplainRequest` (its ``method``, ``layers``, ``windows``:
            ``None`` for whole volumes, and ``options``).
        result_keys: ``result_keys(request)``: the keys of the result of a request (``None``: its layer names).
        options: the names of the optional settings the kind takes from a door's common option set (e.g. occlusion's
            ``mask_size``); a door passes every option it has and each kind keeps its own (see
            :py:meth:`~monai_segcam.explainers.ExplainRequest.with_options`).
        methods: the method names the kind answers (default: ``name``); the CAM engines' kind answers every
            registered CAM rule (and rule instances).

    Example:
        .. code-block:: python

            register_explainer(ExplainerKind("intensity", build=lambda net, request: Intensity(net, **request.options),
                                             result_keys=lambda request: ("input",)))
    """

    name: str
    build: Builder
    result_keys: Callable[[Any], tuple[str, ...]] | None = None
    options: frozenset[str] = field(default_factory=frozenset)
    methods: Callable[[], Sequence[str]] | None = None

    def answers(self) -> list[str]:
        """The method names of this kind."""
        return [self.name] if self.methods is None else list(self.methods())


_KINDS: dict[str, ExplainerKind] = {}


def register_explainer(kind: ExplainerKind, replace: bool = False) -> ExplainerKind:
    """Register an explainer kind under its method name; every front door then accepts the name.

    Raises:
        ValueError: when the name is taken (by a kind or a CAM rule) and ``replace`` is False.

    Example:
        .. code-block:: python

            register_explainer(ExplainerKind("intensity", build_intensity, result_keys=lambda request: ("input",)))
            make_segcam(net, method="intensity")  # also `monai-segcam explain --method intensity`, SegCAMd(method=...)
    """
    taken = {name for other in _KINDS.values() if other.name != kind.name for name in other.answers()}
    if not replace and (kind.name in _KINDS or taken & set(kind.answers())):
        raise ValueError(f"Method name {kind.name!r} is already registered.")
    _KINDS[kind.name] = kind
    return kind


def _load_entry_points() -> None:
    """Import the modules of the ``monai_segcam.explainers`` entry points (they register their kinds)."""
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _KINDS:
            import_module(entry.value.split(":")[0])


def explainer_methods() -> list[str]:
    """Every method name the front doors accept: the CAM rules, then the other registered kinds.

    Example:
        >>> {"hirescam", "occlusion"} <= set(explainer_methods())
        True
    """
    _load_entry_points()
    return list(dict.fromkeys(name for kind in _KINDS.values() for name in kind.answers()))


def explainer_kind(method: str | CAMRule) -> ExplainerKind:
    """The kind answering ``method`` (a method name or a :py:class:`~monai_segcam.cam.CAMRule` instance).

    Raises:
        ValueError: for an unknown name, listing the closest ones.

    Example:
        >>> explainer_kind("occlusion").name, explainer_kind("hirescam").name
        ('occlusion', 'cam')
    """
    if isinstance(method, CAMRule):
        return _KINDS[CAM_KIND]
    kind = _find(method)
    if kind is None:
        _load_entry_points()
        kind = _find(method)
    if kind is not None:
        return kind
    close = difflib.get_close_matches(str(method), explainer_methods(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"Unknown method {method!r}.{hint} Available: {', '.join(explainer_methods())}.")


def _find(name: str) -> ExplainerKind | None:
    return next((kind for kind in _KINDS.values() if name in kind.answers()), None)
