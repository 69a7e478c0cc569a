"""Parameters and multiply-adds of every model variant and input size (the README's table).

    python -m benchmarks.model_table --write      # docs/benchmarks/model_table.{json,md}
"""
from __future__ import annotations

import argparse

from benchmarks._common import add_output_arguments, markdown_table, parse_args, write_results

from faceage.nets.model import count_macs, count_params, create_model
from faceage.nets.spec import ARCHS, FIXED_ARCHS, STAGE_CHANNELS

SIZES = (112, 150, 160, 224)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_arguments(ap)
    args = parse_args(ap, argv)
    rows, data = [], []
    for arch in ARCHS:
        for width in (1.0,) if arch in FIXED_ARCHS else STAGE_CHANNELS:
            model = create_model(arch, width)
            params = count_params(model)
            macs = {s: count_macs(model, s) for s in SIZES}
            data.append({"arch": arch, "width": width, "params": params, "macs": macs,
                         "fp32_mb": round(params * 4 / 1e6, 2)})
            rows.append([arch if arch in FIXED_ARCHS else f"{arch} {width:g}x", f"{params:,}", f"{params * 4 / 1e6:.2f}"]
                        + [f"{macs[s] / 1e6:.1f}" for s in SIZES])
    header = ["model", "parameters", "fp32 MB"] + [f"MMACs @{s}px" for s in SIZES]
    table = markdown_table(header, rows) + (
        "\n\nParameters include the 101-way age head and its regression neuron. Multiply-adds are those of "
        "convolutions and matrix products (PyTorch's FLOP counter / 2); the attention's element-wise gating is "
        "not counted. face_resnet is dlib's face-recognition ResNet (one shape; it knows 150-px chips).")
    write_results("model_table", {"sizes": SIZES, "models": data}, table, args.out)


if __name__ == "__main__":
    main()
