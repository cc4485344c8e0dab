# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Copy the CAM kept by a :py:class:`~monai_segcam.inferers.SegCAMInferer` into ``engine.state.output``."""

from __future__ import annotations

from monai.engines.utils import IterationEvents

from ..inferers import SegCAMInferer
from ..outputs import cam_output_keys
from .compute import Engine

__all__ = ["SegCAMOutputHandler"]


class SegCAMOutputHandler:
    """At ``IterationEvents.FORWARD_COMPLETED``, copy ``inferer.last_cam`` into ``engine.state.output[cam_key]``.

    The CAM is batch first with the batch's metadata, so the engine's decollation and ``postprocessing`` (e.g.
    ``Invertd(keys=["pred", "cam"])``, ``SaveImaged(keys="cam")``) handle it like the prediction. With several
    layers the keys are ``f"{cam_key}_{layer}"`` (:py:func:`~monai_segcam.outputs.cam_output_keys`).

    Args:
        inferer: the :py:class:`~monai_segcam.inferers.SegCAMInferer`; defaults to the engine's ``inferer``.
        cam_key: the output key.

    Example:
        .. code-block:: python

            evaluator = SupervisedEvaluator(
                device, loader, net, inferer=SegCAMInferer(classes=1), val_handlers=[SegCAMOutputHandler()]
            )
    """

    def __init__(self, inferer: SegCAMInferer | None = None, cam_key: str = "cam") -> None:
        self.inferer = inferer
        self.cam_key = cam_key

    def attach(self, engine: Engine) -> None:
        """Register :py:meth:`__call__` at ``IterationEvents.FORWARD_COMPLETED`` of ``engine``."""
        if not engine.has_event_handler(self, IterationEvents.FORWARD_COMPLETED):
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        inferer = self.inferer if self.inferer is not None else getattr(engine, "inferer", None)
        if not isinstance(inferer, SegCAMInferer):
            raise TypeError(
                f"SegCAMOutputHandler reads a SegCAMInferer's CAM, but the inferer is a {type(inferer).__name__}: "
                "give the engine `inferer=SegCAMInferer(...)` or pass it here."
            )
        cam = inferer.last_cam
        if cam is None:
            raise RuntimeError("The SegCAMInferer has no CAM for this iteration: was it the engine's inferer?")
        if not isinstance(engine.state.output, dict):
            raise TypeError(f"engine.state.output is a {type(engine.state.output).__name__}, expected a dict.")
        for layer, key in cam_output_keys(self.cam_key, inferer.request.result_layers).items():
            engine.state.output[key] = cam[layer]
        inferer.last_cam = None
