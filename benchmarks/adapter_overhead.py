#!/usr/bin/env python
"""What the ASQ adapters cost, per zoo model and bit-width, next to the ASQ paper's Table 1.

For each model quantized with ASQ+POST (first and last layers 8-bit LSQ, as everywhere in
qexport): the adapters' parameters as a share of the model's parameters (the paper's measure:
ResNet-18 2.67 / 5.34 / 7.11 / 10.67 % at 8 / 4 / 3 / 2 bits), their float32 bytes as a share of
the quantized layers' packed weight bytes, and their multiply-adds per sample as a share of the
model's. Prints JSON, then a markdown table.

Usage: python benchmarks/adapter_overhead.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from qexport.models import build_model  # noqa: E402
from qexport.models.common import count_macs  # noqa: E402
from qexport.nn import quantize_  # noqa: E402
from qexport.nn.layers import QuantMixin  # noqa: E402
from qexport.quant.asq import AsqActQuantizer  # noqa: E402
from qexport.quant.config import QuantConfig  # noqa: E402

MODELS = {"small_cnn": (1, 28, 28), "resnet20": (3, 32, 32), "resnet18": (3, 224, 224)}


def measure(name: str, shape: tuple[int, ...], bits: int) -> dict:
    model = build_model(name)
    macs = count_macs(model, torch.zeros((1,) + shape))
    quantize_(model, QuantConfig(method="asq+post" if bits <= 4 else "asq", bits=bits))
    adapters = [m for m in model.modules() if isinstance(m, AsqActQuantizer)]
    adapter_params = sum(p.numel() for a in adapters for p in (*a.fc1.parameters(), *a.fc2.parameters()))
    model_params = sum(p.numel() for p in model.parameters()) - sum(1 for m in model.modules()
                                                                     if hasattr(m, "step"))
    packed = sum((m.weight.numel() * m.weight_quant.bits + 7) // 8 for m in model.modules() if isinstance(m, QuantMixin))
    adapter_macs = sum(a.fc1.in_features * a.fc1.out_features + a.fc2.in_features for a in adapters)
    return {"model": name, "bits": bits, "adapters": len(adapters), "adapter_params": adapter_params,
            "params_pct": 100.0 * adapter_params / model_params, "adapter_bytes": 4 * adapter_params,
            "bytes_pct_of_packed_weights": 100.0 * 4 * adapter_params / packed,
            "macs_pct": 100.0 * adapter_macs / macs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    rows = [measure(name, shape, bits) for name, shape in MODELS.items() for bits in (8, 4, 3, 2)]
    text = json.dumps(rows, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    print("\n| model | bits | adapters | adapter params | % of model params | % of packed weight bytes | % of MACs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['bits']} | {r['adapters']} | {r['adapter_params']:,} | {r['params_pct']:.2f} | "
              f"{r['bytes_pct_of_packed_weights']:.1f} | {r['macs_pct']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
