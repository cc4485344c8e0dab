# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Argument parsing and error handling of ``monai-segcam`` (``python -m monai_segcam``)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from .io import CLIError
from .perturbation import add_arguments as add_perturbation_arguments

__all__ = ["build_parser", "main"]


_EPILOG = """examples:
  monai-segcam layers --bundle bundles/segcam_demo
  monai-segcam explain ct.nii.gz --bundle bundles/segcam_demo --layers bottleneck pre_head \\
      --method hirescam gradcam --classes 1 --output cams/
  monai-segcam explain case_0000.nii.gz case_0001.nii.gz --nnunet nnUNetTrainer__nnUNetPlans__3d_fullres \\
      --folds 0 1 2 3 4 --output cams/
  monai-segcam explain scan.nrrd dicom_folder/ --network monai.networks.nets.UNet \\
      --network-args '{"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64],
      "strides": [2, 2]}' --checkpoint model.pt --roi-size 96 --output cams/
"""


# the built-in method names of the registry (monai_segcam.explainers.explainer_methods()), here so that `--help` and
# argument errors need neither torch nor MONAI; tests/cli/test_cli_startup.py checks that they are the registry's
METHODS = ("gradcam", "hirescam", "xrescam", "gradcampp", "gradcampp_relu", "xgradcam", "layercam", "eigencam", "scorecam",
           "gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "occlusion")  # fmt: skip
ENTRY_POINT_GROUP = "monai_segcam.explainers"  # monai_segcam.explainers.ENTRY_POINT_GROUP: the kinds of other packages


def methods() -> list[str]:
    """The ``--method`` choices: the built-in methods, those of installed packages (their entry points' names, read
    from the packages' metadata without importing them) and, when this process has loaded the registry, every name
    registered in it (a rule or kind registered from Python before :py:func:`main` is called)."""
    from importlib import metadata

    names = [*METHODS, *(entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP))]
    if "monai_segcam.cam.methods" in sys.modules:  # loaded already (the CAM rules), so reading it costs nothing
        names += sys.modules["monai_segcam.cam.methods"].method_names()
    if "monai_segcam.explainers" in sys.modules:  # and the other kinds
        names += sys.modules["monai_segcam.explainers"].explainer_methods()
    return list(dict.fromkeys(names))


def _classes(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid class {text!r}: use output channel numbers or all") from None


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (a MONAI bundle, or a network class with its arguments)")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", metavar="DIR", help="MONAI bundle folder (network_def, preprocessing, inferer)")
    source.add_argument("--network", metavar="DOTTED.PATH", help="network class, e.g. monai.networks.nets.UNet")
    source.add_argument(
        "--nnunet", metavar="MODEL_FOLDER",
        help="nnU-Net v2 model folder <trainer>__<plans>__<configuration>/ or a MONAI bundle converted from one "
        "(needs pip install monai-segcam[nnunet])",
    )  # fmt: skip
    group.add_argument(
        "--config", nargs="+", default=["configs/inference.json"], metavar="FILE",
        help="bundle config file(s), relative to the bundle (default: configs/inference.json)",
    )  # fmt: skip
    group.add_argument("--network-args", default="{}", metavar="JSON", help="keyword arguments of --network, as JSON")
    group.add_argument(
        "--checkpoint", metavar="FILE",
        help="weights: a state dict or a dict holding one under 'model'/'state_dict' (bundle: models/model.pt)",
    )  # fmt: skip
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    _nnunet_arguments(parser)


def _nnunet_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--nnunet`` (the folder itself is one of the model sources)."""
    group = parser.add_argument_group("nnU-Net v2 model folder (with --nnunet)")
    group.add_argument(
        "--folds", nargs="+", metavar="K", help="folds whose logits are averaged (default: every fold with a checkpoint)"
    )
    group.add_argument(
        "--no-mirroring", action="store_true", help="no test-time mirroring (default: the checkpoint's mirroring axes)"
    )
    group.add_argument(
        "--nnunet-checkpoint", metavar="NAME",
        help="checkpoint file in each fold folder (default: checkpoint_final.pth; model.pt in a MONAI bundle)",
    )  # fmt: skip
    group.add_argument("--tile-step-size", type=float, default=0.5, help="nnU-Net's tile step (default 0.5)")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks and every warning")


def _cam_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``CAM`` and ``sliding window`` option groups of ``explain``."""
    cam = parser.add_argument_group("CAM")
    cam.add_argument(
        "--layers", nargs="+", default=["pre_head"], metavar="L",
        help="layer names or roles (bottleneck, pre_head, encoder.N, decoder.N); see `monai-segcam layers`",
    )  # fmt: skip
    cam.add_argument("--method", nargs="+", default=["hirescam"], choices=methods(), metavar="M",
                     help=", ".join(methods()))  # fmt: skip
    cam.add_argument(
        "--classes", nargs="+", type=_classes, metavar="C",
        help="output channels to explain, or all (every channel, 0 included); default: all but 0",
    )  # fmt: skip
    cam.add_argument(
        "--region", default="pred",
        help="explained region: pred (default), all, empty, label, fp, fn (these three need --label), component[:N], "
        "voxel:I,J,K or box:I0,J0,K0:I1,J1,K1 (voxel indices of the input file; box corners included)",
    )  # fmt: skip
    cam.add_argument("--contrast", type=int, metavar="C2",
                     help="explain 'why each class here and not C2': the score sum_M (y_c - y_C2)")  # fmt: skip
    cam.add_argument(
        "--prompt", action="append", metavar="P",
        help="a promptable model's prompt (VISTA3D): class:N[,M] (label ids, one map each) or point:I,J,K[:label] "
        "(a click in voxels of the input file, label 1 foreground (default) or 0 background; repeat for more clicks)",
    )  # fmt: skip
    cam.add_argument("--label", nargs="+", metavar="FILE", help="ground-truth label map(s), one per image")
    cam.add_argument("--target", default="logits", choices=("logits", "probabilities"), help="explained score")
    cam.add_argument(
        "--multi-label", action="store_true",
        help="the outputs are independent sigmoid channels (class c is predicted where its logit > 0); "
        "default: detected from the bundle's postprocessing (Activations with sigmoid)",
    )  # fmt: skip
    window = parser.add_argument_group("sliding window (default: the bundle's inferer, else the whole volume)")
    window.add_argument("--roi-size", nargs="+", type=int, metavar="N", help="window size (one value or one per axis)")
    window.add_argument("--overlap", type=float, help="window overlap in [0, 1) (default 0.25)")
    window.add_argument("--sw-batch-size", type=int, metavar="N", help="windows per forward pass")
    window.add_argument("--mode", choices=("constant", "gaussian"), help="blending of overlapping windows")
    window.add_argument(
        "--activation-budget", type=float, metavar="MIB",
        help="MiB of window activations (and autograd graphs) the CAM keeps between its passes; past it windows run "
        "forward again (default 1024; more is faster for global-weight methods on large volumes)",
    )  # fmt: skip
    window.add_argument(
        "--amp", action="store_true",
        help="mixed precision: windows under torch.autocast (float16 on CUDA, bfloat16 on CPU), maps in float32",
    )  # fmt: skip


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    """The preprocessing (without a bundle) and ``output`` option groups of ``explain``."""
    intensity = parser.add_argument_group("preprocessing without a bundle (the image is used on its own grid)")
    intensity.add_argument(
        "--intensity-range", nargs=2, type=float, metavar=("A_MIN", "A_MAX"), help="clip and scale to [0, 1]"
    )
    intensity.add_argument("--zscore", action="store_true", help="normalise intensities to zero mean, unit variance")
    out = parser.add_argument_group("output")
    out.add_argument("--output", required=True, metavar="DIR", help="output folder (one sub-folder per case)")
    out.add_argument("--png", action=argparse.BooleanOptionalAction, default=True, help="write PNG overlays")
    out.add_argument("--format", nargs="+", default=["nifti"], choices=("nifti", "dicom"), metavar="F",
                     help="map and segmentation files: nifti (default) and/or dicom (a DICOM series input: DICOM "
                     "Parametric Maps and DICOM SEG in its study; needs monai-segcam[dicom])")  # fmt: skip
    out.add_argument("--slicer", action="store_true", help="also write a 3D Slicer scene per case, <case>_scene.mrml, "
                     "and the classes' colour table <case>_colors.ctbl: the image with the maps and the segmentation")  # fmt: skip
    out.add_argument("--center", default="peak", choices=("peak", "centroid"), help="PNG slices through the CAM peak "
                     "or the predicted region's centroid")  # fmt: skip
    out.add_argument("--normalize", action="store_true", help="min-max normalise each written map to [0, 1]")
    out.add_argument("--structures", default="segmentation", metavar="LABELS",
                     help="the structure table <case>_structures.csv (each map's share of positive relevance and mean "
                     "relevance per structure) and OUTPUT/segcam_structures.csv (mean, std over the cases) of: "
                     "segmentation (default), label (the --label files), a label map or atlas FILE (resampled "
                     "nearest onto each input's grid), or none")  # fmt: skip
    out.add_argument("--structure-names", metavar="JSON", help="structure names by label value, e.g. "
                     "'{\"1\": \"liver\"}' (default: the bundle's label names)")  # fmt: skip
    out.add_argument("--report", action="store_true", help="also write a review report to open in a browser: "
                     "OUTPUT/report/index.html (table of cases, flagged cases, a 3D viewer per case)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``monai-segcam`` argument parser with its ``explain`` and ``layers`` commands."""
    parser = argparse.ArgumentParser(
        prog="monai-segcam",
        description="Volumetric Seg-CAMs of 3D segmentation networks (MONAI), on each input's own voxel grid.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{explain,layers}")

    explain = commands.add_parser(
        "explain", help="compute Seg-CAMs of images and write NIfTI maps, PNG overlays and a JSON summary",
        description="Compute Seg-CAMs of NIfTI / NRRD / MHA images or DICOM series folders.",
    )  # fmt: skip
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files or DICOM series folders")
    _model_arguments(explain)
    _cam_arguments(explain)
    add_perturbation_arguments(explain)
    _output_arguments(explain)
    _common_arguments(explain)

    layers = commands.add_parser(
        "layers", help="list the network's layers with output shapes and roles",
        description="List the layers a CAM can be built from, with their output shapes and the roles discovered for them.",
    )  # fmt: skip
    _model_arguments(layers)
    layers.add_argument(
        "--input-shape", nargs="+", type=int, metavar="N",
        help="(B, C, *spatial) of the probe input (default: 1, in_channels, then the bundle's roi_size or 96 96 96)",
    )  # fmt: skip
    _common_arguments(layers)
    return parser


def run_layers(args: argparse.Namespace) -> int:
    """Run ``monai-segcam layers``: print the layer table and the discovered roles."""
    from monai.inferers import SlidingWindowInferer

    from .model import load_model, resolve_device

    model = load_model(args, checkpoint_required=False)
    network = model.network.to(resolve_device(args.device))
    shape = args.input_shape
    if shape is None:
        roi = model.inferer.roi_size if isinstance(model.inferer, SlidingWindowInferer) else 96
        shape = [1, model.in_channels or 1, *(r if r > 0 else 96 for r in ((roi,) * 3 if isinstance(roi, int) else roi))]
    from .layers import show_layers

    return show_layers(network, shape, args.quiet)


def _check_region(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A malformed ``--region`` is a usage error, checked once the other arguments are (it imports the engines)."""
    if getattr(args, "region", None) is None:
        return
    from ..cam.regions import parse_region

    try:
        parse_region(args.region)
    except ValueError as exc:
        parser.error(f"argument --region: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``monai-segcam``; returns the exit status (0 success, 1 error, 2 usage error).

    Example:
        .. code-block:: bash

            monai-segcam explain ct.nii.gz --bundle bundles/segcam_demo --output cams/
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_region(parser, args)
    if getattr(args, "classes", None) and "all" in args.classes and len(args.classes) > 1:
        parser.error("argument --classes: all stands alone (every output channel)")
    if not args.debug:  # library deprecation notices are not the user's business
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # MONAI's DICOM reader says that nvImageCodec (a GPU decoder) is missing whenever it is built, pydicom installed
        logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", "NvImgCodecPydicomReader", UserWarning)
    if getattr(args, "method", None):
        args.method = list(dict.fromkeys(args.method))
    try:
        if getattr(args, "nnunet", None):
            from .nnunet import run_explain_nnunet, run_layers_nnunet

            return run_layers_nnunet(args) if args.command == "layers" else run_explain_nnunet(args)
        if args.command == "layers":
            return run_layers(args)
        from .explain import run_explain

        return run_explain(args)
    except CLIError as exc:
        if args.debug:
            raise
        print(f"monai-segcam: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("monai-segcam: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        message = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        print(f"monai-segcam: error: {message} (run with --debug for the traceback)", file=sys.stderr)
        return 1
