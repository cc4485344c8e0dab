# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""How a bundle's postprocessing inverts its prediction, so that CAMs are inverted the same way and land where the
prediction lands (whatever the bundle's key names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.transforms import Invertd
from monai.utils import ensure_tuple

__all__ = ["find_invertd", "invert_like"]


def find_invertd(postprocessing: Any, key: str = "pred") -> Any:
    """The first ``Invertd`` of ``postprocessing`` that inverts ``key``, or ``None``.

    Accepts instantiated transforms (a ``Compose`` is searched through; the ``Invertd`` is returned) and raw, unparsed
    bundle config content (``{"_target_": "Invertd", "keys": "pred", ...}`` anywhere inside; the dict is returned).

    Example:
        .. code-block:: python

            find_invertd(parser.get_parsed_content("postprocessing")).orig_keys  # ('artery',)
            find_invertd(parser["postprocessing"])["orig_keys"]  # 'artery', from the raw config
    """
    if isinstance(postprocessing, Mapping):
        target = str(postprocessing.get("_target_", "")).rpartition(".")[2]
        if target == "Invertd" and key in ensure_tuple(postprocessing.get("keys")):
            return postprocessing
        return next((found for v in postprocessing.values() if (found := find_invertd(v, key)) is not None), None)
    if isinstance(postprocessing, Sequence) and not isinstance(postprocessing, str):
        return next((found for v in postprocessing if (found := find_invertd(v, key)) is not None), None)
    if isinstance(postprocessing, Invertd):
        return postprocessing if key in postprocessing.keys else None
    transforms = getattr(postprocessing, "transforms", None)
    return find_invertd(list(transforms), key) if transforms else None


def invert_like(
    postprocessing: Any, keys: Sequence[str], transform: Any = None, orig_keys: str | None = None, key: str = "pred"
) -> Invertd | None:
    """An ``Invertd`` of ``keys`` (the CAMs) that inverts them as ``postprocessing`` inverts ``key`` (the
    prediction): the same ``transform`` and ``orig_keys`` (e.g. ``"artery"`` in a bundle that concatenates several
    loaded phases into a metadata-less ``image``), linear interpolation, missing keys allowed. ``None`` when the
    postprocessing does not invert the prediction and no ``orig_keys`` is given: the CAMs then stay where the
    prediction stays, on the network grid.

    Args:
        postprocessing: the bundle's postprocessing (instantiated, or raw config content).
        keys: the CAM keys, e.g. :py:func:`~monai_segcam.outputs.cam_keys`.
        transform: the preprocessing to invert when the postprocessing's own cannot be used (raw config, or no
            ``Invertd`` but an explicit ``orig_keys``).
        orig_keys: overrides the key whose applied operations and metadata are inverted.
        key: the prediction's key.

    Example:
        .. code-block:: python

            "cam_invert": "$monai_segcam.utils.invert_like(@postprocessing, @cam_keys, @preprocessing, @cam_orig_key)"
    """
    found = find_invertd(postprocessing, key)
    if isinstance(found, Invertd):
        transform = found.transform
        orig_keys = orig_keys or str(found.orig_keys[found.keys.index(key)])
    elif isinstance(found, Mapping) and isinstance(found.get("orig_keys"), str):
        orig_keys = orig_keys or found["orig_keys"]
    if orig_keys is None:
        return None
    if transform is None:
        raise ValueError(f"Cannot invert {list(keys)} onto {orig_keys!r}: give the preprocessing as `transform`.")
    return Invertd(keys=list(keys), transform=transform, orig_keys=orig_keys, nearest_interp=False, to_tensor=True,
                   allow_missing_keys=True)  # fmt: skip
