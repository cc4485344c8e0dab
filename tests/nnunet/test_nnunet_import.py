# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Without nnU-Net v2, the package imports and its use says how to install the extra."""

from __future__ import annotations

import sys

import pytest


def test_missing_nnunet_names_the_extra(monkeypatch, tmp_path):
    import monai_segcam.nnunet as nnunet

    monkeypatch.setitem(sys.modules, "nnunetv2", None)  # `import nnunetv2` now raises ImportError
    for module in [m for m in sys.modules if m.startswith("nnunetv2.")]:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install monai-segcam\[nnunet\]"):
        nnunet.NNUNetModel(tmp_path)
    with pytest.raises(ImportError, match=r"pip install monai-segcam\[nnunet\]"):
        nnunet.nnunet_window_grid((16, 16, 16))
