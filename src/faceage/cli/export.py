"""faceage export: a model as ONNX (fp32 or int8) for inference without PyTorch."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "export a model to ONNX (fp32 or int8) for inference without PyTorch"
EPILOG = """examples:
  faceage export runs/cpu --format onnx --out model.onnx
  faceage export model.safetensors --format onnx --int8 dynamic --out model-int8.onnx
  faceage export runs/cpu --format onnx --int8 static --calibration data/utkface-128/manifest.csv --out model-int8.onnx

The ONNX file takes uint8 aligned crops (N, S, S, 3) in RGB order and normalises them
inside the graph; its outputs are 'logits' (N, 101) and 'reg' (N,). The model record
(input size, normalisation, crop geometry) is stored in the file's metadata, so
'faceage predict --model model.onnx' and AgeEstimator(model="model.onnx") need no PyTorch.
Parity with PyTorch (max |age difference| in years) is checked on real crops
(--calibration, else --parity-data, else synthetic crops) and printed."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.safetensors) or training run folder")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default onnx)")
    p.add_argument("--int8", choices=["dynamic", "static"], default=None,
                   help="quantize with ONNX Runtime: dynamic (weights) or static (needs --calibration)")
    p.add_argument("--calibration", metavar="MANIFEST_OR_FOLDER", default=None,
                   help="real aligned face crops for static int8 calibration and for the parity check")
    p.add_argument("--calibration-size", type=int, default=256, help="crops used for calibration (default 256)")
    p.add_argument("--parity-data", metavar="MANIFEST_OR_FOLDER", default=None,
                   help="crops for the parity check (default: --calibration, else 32 synthetic crops)")
    p.add_argument("--half-weights", action="store_true",
                   help="store the weights as fp16 (half the file), computed in fp32 as usual")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--out", "-o", required=True, help="output .onnx file")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    from faceage.extras import require

    require("train", "faceage export", ("torch", "onnx", "onnxscript"))
    import numpy as np

    from faceage.errors import FaceageError
    from faceage.export import export_onnx, load_crops, parity, precision_label
    from faceage.models import locate
    from faceage.models.weights import read_record

    model_path = locate(args.model, "torch")
    record = read_record(model_path)
    size = record.input_size
    calibration = None
    if args.int8 == "static":
        if not args.calibration:
            raise FaceageError("--int8 static needs --calibration MANIFEST_OR_FOLDER (aligned face crops)")
        pool = load_crops(args.calibration, size, limit=2 * args.calibration_size)[0]
        calibration, held_out = pool[0::2], pool[1::2]  # calibrate on half, check parity on the other half
    out = export_onnx(model_path, args.out, int8=args.int8, calibration=calibration, opset=args.opset,
                      half=args.half_weights)

    source = args.parity_data or args.calibration
    if source:
        if calibration is not None and args.parity_data is None and len(held_out):
            crops = held_out
        else:
            crops = load_crops(source, size, limit=256)[0]
        what = f"{len(crops)} crops from {source}"
    else:
        crops = np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
        what = "32 synthetic crops (pass --calibration or --parity-data for real faces)"
    par = parity(model_path, out, crops)
    result = {
        "out": str(out), "bytes": Path(out).stat().st_size, "precision": precision_label(args.int8, args.half_weights),
        "parity": {**par.to_dict(), "data": what},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {out} ({result['bytes'] / 1e6:.2f} MB, {result['precision']})")
        print(f"parity vs PyTorch on {what}: max |age diff| {par.max_age_diff:.4f} years, "
              f"mean {par.mean_age_diff:.4f}; max |logit diff| {par.max_logit_diff:.2e}")
    return 0
