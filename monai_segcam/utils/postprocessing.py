# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""What a bundle's postprocessing says about the network's outputs: a sigmoid means independent (multi-label)
channels, as in BraTS-style bundles, where class ``c`` is predicted where its logit is positive."""

from __future__ import annotations

from typing import Any

__all__ = ["applies_sigmoid"]

_ACTIVATIONS = ("Activations", "Activationsd")


def applies_sigmoid(postprocessing: Any) -> bool:
    """Whether ``postprocessing`` holds an ``Activations``/``Activationsd`` transform with ``sigmoid`` on.

    Accepts instantiated transforms (a ``Compose`` is searched through) and raw, unparsed bundle config content
    (``{"_target_": "Activationsd", "sigmoid": true}`` anywhere inside); a reference such as ``"@use_sigmoid"``
    does not count. Use it to set ``multi_label`` from a bundle, e.g. in a config:
    ``"multi_label": "$monai_segcam.utils.applies_sigmoid(@postprocessing)"``.

    Example:
        .. code-block:: python

            from monai.transforms import Activationsd, AsDiscreted, Compose

            applies_sigmoid(Compose([Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)]))  # True
            applies_sigmoid({"_target_": "Activationsd", "keys": "pred", "softmax": True})  # False
    """
    if isinstance(postprocessing, dict):
        target = str(postprocessing.get("_target_", "")).rpartition(".")[2]
        if target in _ACTIVATIONS and postprocessing.get("sigmoid") is True:
            return True
        return any(applies_sigmoid(value) for value in postprocessing.values())
    if isinstance(postprocessing, (list, tuple)):
        return any(applies_sigmoid(value) for value in postprocessing)
    if type(postprocessing).__name__ in _ACTIVATIONS:
        sigmoid = getattr(postprocessing, "sigmoid", False)
        return any(value is True for value in (sigmoid if isinstance(sigmoid, (list, tuple)) else [sigmoid]))
    return applies_sigmoid(list(getattr(postprocessing, "transforms", None) or []))
