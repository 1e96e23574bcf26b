#!/usr/bin/env python
"""qexport against ONNX Runtime's own float and int8 paths on this CPU (docs/performance.md).

For each network (ResNet-20 on 3x32x32, the Fashion-MNIST CNN on 1x28x28, ResNet-18 on
3x224x224) this script builds, once, three ONNX files of the same (random-init, or for the CNN
the shipped trained) weights:

* ``float``: torch.onnx.export (dynamo) of the float model, run by ONNX Runtime (MLAS fp32);
* ``int8``:  onnxruntime.quantization.quantize_static of it: QDQ, per-channel int8 weights, uint8
  activations calibrated (MinMax) on the calibration inputs, after quant_pre_process; ONNX
  Runtime fuses it into QLinearConv / QLinearAdd / QGemm (MLAS int8, which uses VNNI or AMX when
  the CPU has them);
* ``w<b>``:  qexport ASQ+POST at b bits (first and last layer 8-bit), calibrated on the same
  inputs (qexport.convert.quantize_model) and exported (qexport.export.export_onnx, fused).

Then, in this one process, it times them interleaved (qexport.runtime.bench.time_variants:
every round runs each variant once untimed and then ``per_round`` timed runs; the result is the
median) for every (batch, intra-op threads), measures peak memory (a fresh subprocess per
configuration, the VmHWM of /proc/self/status), profiles ResNet-20 per op and MobileNetV2 per layer kind
(depthwise, pointwise; ONNX Runtime's profiler) and
the per-core instruction peaks (benchmarks/peak.cc), and writes
``benchmarks/results/performance.json`` (one record per network, bits, batch, threads) and
``docs/performance.md``. The ResNet-20 files are kept in benchmarks/results/models/perf/
(resnet20_float.onnx, resnet20_int8.onnx, resnet20_w4.onnx, resnet20_w3.onnx; input
(N, 3, 32, 32) float32), so the timing can be reproduced with plain onnxruntime.

With ``--arm-icount`` it measures instead, for ARM without ARM hardware, the dynamic aarch64
instruction count of one inference of the same models under qemu-aarch64 with a counting TCG plugin
(benchmarks/arm_icount.py: qexport's neon and dotprod paths against ONNX Runtime's aarch64 float and
int8 paths; a proxy, not time), stores it under ``arm_icount`` in performance.json and rewrites
docs/performance.md from that file: the x86 sections come out as they were, with the ARM section
added. A later x86 run keeps the ``arm_icount`` it finds in performance.json, and the
``convert_scale`` section that benchmarks/convert_scale.py measures (convert time and memory).

Usage:
  python benchmarks/bench.py                  # build what is missing, wait for a quiet machine, measure
  python benchmarks/bench.py --quick          # fewer rounds, ResNet-20 only (a smoke test)
  python benchmarks/bench.py --rebuild        # re-export every model
  python benchmarks/bench.py --arm-icount     # ARM instruction counts (ResNet-20, the CNN, MobileNetV2 32x32)
Options: --networks resnet20,small_cnn,resnet18,mobilenet_v2_cifar,mobilenet_v2  --rounds N  --no-memory
         --no-wait  --out DIR  --doc PATH
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qexport.runtime.bench import Variant, peak_memory_mb, profile_ops, time_variants  # noqa: E402
from qexport.io import atomic_write_text  # noqa: E402

NETWORKS = {
    "resnet20": dict(arch="resnet20", shape=(3, 32, 32), bits=(4, 3), batches=(1, 32), threads=(1, 2), calib=64,
                     title="ResNet-20 (CIFAR, 3x32x32)"),
    "small_cnn": dict(arch="small_cnn", shape=(1, 28, 28), bits=(4, 3), batches=(1, 64), threads=(1, 2), calib=256,
                      checkpoint="samples/small_cnn_float.pt", title="Fashion-MNIST CNN (1x28x28)"),
    "resnet18": dict(arch="resnet18", shape=(3, 224, 224), bits=(4, 3), batches=(1, 8), threads=(1, 2), calib=8,
                     title="ResNet-18 (3x224x224)"),
    "mobilenet_v2_cifar": dict(arch="mobilenet_v2_cifar", shape=(3, 32, 32), bits=(4, 3), batches=(1, 32),
                               threads=(1, 2), calib=64, title="MobileNetV2 (CIFAR, 3x32x32)"),
    "mobilenet_v2": dict(arch="mobilenet_v2", shape=(3, 224, 224), bits=(4, 3), batches=(1, 8), threads=(1, 2),
                         calib=8, title="MobileNetV2 (3x224x224)"),
}
TARGETS = {"vs_float": 0.5, "vs_int8": 0.8}  # issue 4: ResNet-20, batch 1 and 32, 1 and 2 threads
TARGETS_EVERY = {"vs_float": 0.45, "vs_int8": 0.6}  # issue 16: every network and cell
KIND_NETWORKS = ("mobilenet_v2_cifar", "mobilenet_v2")  # profiled by layer kind (depthwise, pointwise, ...)
X86_NETWORKS = "resnet20,small_cnn,resnet18,mobilenet_v2_cifar,mobilenet_v2"
ARM_NETWORKS = "resnet20,small_cnn,mobilenet_v2_cifar"
# What the ARM instruction counts show (docs/performance.md, ARM section), written from the run of
# 2026-12-01 (the table above them is regenerated; these sentences are not).
ARM_NOTES = [
    "* What the table says (run of 2026-12-03 10:09): on the dotprod path (cortex-a76) qexport executes 0.77x ONNX "
    "Runtime int8's instructions on ResNet-20, 1.11x on the Fashion-MNIST CNN and 1.76x on MobileNetV2 (32x32); on "
    "the NEON-only core (cortex-a53) 0.66-0.69x, 0.79-0.82x and 1.16-1.18x, while ONNX Runtime int8 itself needs "
    "1.8-2.3x more there than with dotprod. So by this proxy qexport is ahead of ONNX Runtime int8 on ResNet-20 on "
    "both cores and on the CNN without dotprod, behind it on MobileNetV2. On cortex-a53 the 3-bit models take "
    "fewer instructions than the 4-bit ones (their int16 runs are longer, see below); with dotprod both widths go "
    "through the same sdot. Session 20 (the pointwise convs' re-layout as one run per plane and NEON rows of 8-15 "
    "cells 8 at a time, the folded layout of one-channel stems, the conv epilogue's multipliers once per channel "
    "block and partial vectors stored 4/2/1 values at a time) took cortex-a76 from 6.75M to 6.53M on ResNet-20, "
    "3.88M -> 3.61M on the CNN, 32.09M -> 29.38M on MobileNetV2 (cortex-a53: 11.03M -> 10.84M, 6.57M -> 6.13M, "
    "40.82M -> 38.19M, 4-bit); session 19's (the conv's vector and step tables kept per input size) ResNet-20 "
    "6.91M -> 6.75M.",
    "* Session 18 (2026-12-02): (1) the neon path multiplies codes of up to 7 bits on 8-bit lanes: per step one "
    "ld4 deinterleaves the 32 weights into the 8 output channels of each input channel, one ld4r per position "
    "broadcasts its cell's 4 codes, smlal adds code x weight into an int16 vector of the 8 output channels, exact "
    "for runs of 32767 // (4 * max code * max |w|) steps (8 at 4 bits with POST weights, 18 at 3 bits), then "
    "saddw into int32 and one 8x8 transpose at the end: 45 instructions per 256 multiply-adds where the int16 "
    "loop (vmlal_laneq_s16 on widened codes) took about 90 (the ld4r's post-indexed form is inline asm: GCC "
    "otherwise adds each cell's address first, 8 more per step, or copies ld4r's registers around). ResNet-20 "
    "18.10M -> 11.19M (w4) and 10.75M (w3), the CNN 10.77M -> 6.62M, MobileNetV2 59.34M -> 45.6M on cortex-a53. "
    "(2) The depthwise plane kernel in int16 lanes where every partial sum fits int16 (docs/ops.md: mla by scalar "
    "on 8 lanes, no conversion of codes to float), on planes of more than 128 outputs: MobileNetV2 36.88M -> "
    "34.47M on cortex-a76 (int16 everywhere, small planes included: 35.73M; the float channel kernel stays better "
    "on 8x8 and 4x4 planes), 45.6M -> 43.2M on cortex-a53. What is left on cortex-a76 for MobileNetV2: the dot "
    "products 8.8M, the depthwise kernels 10.5M (5.4M of it the float channel kernel on the 8x8 and 4x4 planes), "
    "the epilogue 3.9M, the quantizer 3.2M, the means 3.2M (already 12 instructions per 8 values: float64 "
    "lanes), the re-layout 2.4M. (3) The depthwise channel kernel of the 8x8 and 4x4 planes in int16 lanes too "
    "(8 channels per q register, a trn1/trn2 8x8 transpose): MobileNetV2 34.47M -> 32.19M on cortex-a76 (the "
    "int16 plane kernel on those planes instead: 32.43M), 43.2M -> 40.93M (w4) on cortex-a53.",
    "* Session 17: the re-layout's rows had been left to GCC's vectorization of the portable loop, which a "
    "refactoring (5e2f8c3, the phase-column helper) silently undid: ResNet-20's `relayout` went from 0.71M to "
    "1.09M instructions on cortex-a76 (found by counting builds of 25ca9cb, 5e2f8c3, ec2201b, 94c1c7e and "
    "409c42e). The ARM paths now interleave rows with NEON themselves (st4 at stride 1, the even bytes of ld2 "
    "at stride 2): 0.48M. And the conv epilogue stores whole vectors of 8 positions by vector (it went through "
    "a scalar store per value): 1.70M -> 0.90M. ResNet-20 8.36M -> 6.91M (cortex-a76) and 19.55M -> 18.11M "
    "(cortex-a53); MobileNetV2 (32x32) 42.95M -> 36.89M and 65.5M -> 59.33M. What is left on cortex-a76: the "
    "dot products (ResNet-20 4.05M of 6.91M; MobileNetV2 8.8M of 36.9M), the depthwise kernel (MobileNetV2 "
    "12.8M), the epilogue (3.9M), the quantizer (3.3M) and the means (3.2M).",
    "* MobileNetV2 (32x32, measured 2026-12-02): with the first depthwise kernel (64-byte generic vectors, which "
    "GCC kept in memory on aarch64) it took 81.0M instructions on cortex-a53 and 58.5M on cortex-a76; the kernel on "
    "q registers with fmla brought them to 67.3M and 44.8M, and the NEON quantizer (fdiv, fcvtns, integer clamp: "
    "5.1M -> 3.3M) to 65.5M and 43.0M. The depthwise kernel is still the largest part on cortex-a76 (33%, 14.3M "
    "for about 5.9M multiply-adds: its float planes and epilogue cost more than its fmla), then the dot products "
    "(20%), the conv epilogue (17%), the quantizer (8%) and the means (7%). The channel-vectorized depthwise "
    "kernel (session 16: 4 channels per q register on small planes) brought the depthwise part to 30% (12.9M) "
    "but the model stays at 42.95M (cortex-a76) and 65.5M (cortex-a53): on 4-lane NEON the plane kernel already "
    "needed few instructions per output, and `relayout` grew by about as much (see above). On x86 the same kernel "
    "saved time, not instructions.",
    "* NEON path before session 18 (still the loop for 8-bit codes): the dot product was 79-83% of qexport's "
    "instructions on the ResNet and the CNN. It widens codes and "
    "weights to int16 and multiplies with SMLAL (`vmlal_laneq_s16`, 4 multiply-adds per instruction): its loop is "
    "94 instructions per 256 multiply-adds, 0.37 per MAC (15.2M for ResNet-20's 40.8M MACs), about what ONNX "
    "Runtime int8 spends on the whole model there (0.39 per MAC), and qexport's epilogue, re-layout and quantizer "
    "come on top. With codes and weights of at most 4 bits a product is at most 15 x 8 = 120, so int16 "
    "accumulators take about 270 of them before a widening step: multiply-adds on 8-bit lanes (SMULL/SMLAL, 8 per "
    "instruction) with an occasional SADALP could come near half the instructions of the present loop. That is "
    "the low-bit gain (ULPPACK-style) that the NEON path takes since session 18 (above).",
    "* dotprod path: the dot product is close to its floor (its loop is 24 instructions per 256 multiply-adds: 16 "
    "SDOT, 4 vector loads, the offset load and the loop control; 3.8M for ResNet-20, measured 4.05M), and about "
    "half of qexport's instructions are elsewhere: the conv epilogue (`conv_t`: int32 to float, scale, bias, "
    "residual, ReLU, stores; about 20%), the re-layout of the codes into cells (9%), the ASQ quantizer (5%; "
    "NEON code since 2026-12-02: fdiv, fcvtns and an integer clamp, where the portable loop rounded through "
    "float additions: ResNet-20 8.21M -> 7.97M) and the spatial means (5%, float64 lanes, compiler-vectorized). "
    "A leaner epilogue and means are what remain to take the dotprod path clearly below ONNX Runtime int8.",
    "* ONNX Runtime's framework work is small in instructions: 1-3% of qexport's count lies in "
    "libonnxruntime.so.1. ONNX Runtime's int8 model spends 1-8% of its instructions in libc.",
    "* Not in the table: starting the process, loading ONNX Runtime and creating the session cost 140-195M "
    "instructions, 8-45 times one inference on the ResNet and the CNN (the line above the notes).",
]


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- building the models
def quiet():
    """Silences the exporters and onnxruntime.quantization's root-logger output."""
    from qexport.export.exporter import quiet_exporter

    return quiet_exporter("root")


def float_model(net: str):
    import torch

    from qexport.models import build_model

    spec = NETWORKS[net]
    if spec.get("checkpoint"):
        from qexport.checkpoint import load_model

        return load_model(REPO / spec["checkpoint"]).model.eval()
    torch.manual_seed(0)
    return build_model(spec["arch"]).eval()


def calibration_inputs(net: str) -> np.ndarray:
    spec = NETWORKS[net]
    if net == "small_cnn":
        from qexport.data import load_dataset

        x, _ = load_dataset("samples")
        return np.ascontiguousarray(x[: spec["calib"]], dtype=np.float32)
    # No CIFAR/ImageNet data here: smooth random images in [0, 1) (a blurred noise field per
    # channel), so that activations have image-like spatial correlation rather than white noise.
    rng = np.random.default_rng(1)
    c, h, w = spec["shape"]
    x = rng.random((spec["calib"], c, h, w), dtype=np.float32)
    for _ in range(2):
        x = (x + np.roll(x, 1, 2) + np.roll(x, -1, 2) + np.roll(x, 1, 3) + np.roll(x, -1, 3)) / 5
    x = (x - x.min()) / (x.max() - x.min())
    return np.ascontiguousarray(x, dtype=np.float32)


def count_macs(model, shape) -> int:
    """Multiply-accumulates of one sample (Conv2d and Linear), from forward hooks."""
    import torch
    from torch import nn

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


from qexport.export.baselines import export_float, export_int8  # noqa: E402  (one definition of the baselines)


def export_qexport(model, x: np.ndarray, bits: int, path: Path) -> None:
    import torch

    from qexport.convert import quantize_model
    from qexport.export import export_onnx
    from qexport.quant import QuantConfig

    q = quantize_model(copy.deepcopy(model), QuantConfig("asq+post", bits), x, len(x))
    export_onnx(q, torch.from_numpy(x[:2]), path, meta={"qexport.method": "asq+post"})


def model_paths(net: str, out: Path, cache: Path) -> dict[str, Path]:
    folder = out / "models" / "perf" if net == "resnet20" else cache
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"float": folder / f"{net}_float.onnx", "int8": folder / f"{net}_int8.onnx"}
    for b in NETWORKS[net]["bits"]:
        paths[f"w{b}"] = folder / f"{net}_w{b}.onnx"
    return paths


def build(net: str, paths: dict[str, Path], rebuild: bool) -> int:
    spec = NETWORKS[net]
    model = float_model(net)
    x = calibration_inputs(net)
    if rebuild or not paths["float"].exists():
        say(f"{net}: float export")
        export_float(model, x, paths["float"])
    if rebuild or not paths["int8"].exists():
        say(f"{net}: ONNX Runtime int8 QDQ (quantize_static, per-channel)")
        export_int8(paths["float"], x, paths["int8"])
    for b in spec["bits"]:
        if rebuild or not paths[f"w{b}"].exists():
            say(f"{net}: qexport ASQ+POST {b}-bit (calibrating on {len(x)} inputs)")
            t0 = time.time()
            export_qexport(model, x, b, paths[f"w{b}"])
            say(f"{net}: w{b} exported in {time.time() - t0:.0f} s")
    return count_macs(model, spec["shape"])


# --------------------------------------------------------------------------- machine
def load_average() -> float:
    return os.getloadavg()[0]


def wait_quiet(threshold: float = 0.7, max_minutes: int = 40) -> dict:
    """Wait (checking every minute, up to max_minutes) until the 1-minute load average is below
    threshold; returns what was seen."""
    t0 = time.time()
    load = load_average()
    while load >= threshold and time.time() - t0 < max_minutes * 60:
        say(f"load average {load:.2f} >= {threshold}: waiting for a quieter machine")
        time.sleep(60)
        load = load_average()
    return {"load_at_start": load, "waited_s": round(time.time() - t0), "quiet": load < threshold}


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
                break
    except OSError:
        pass
    return info


def measure_peaks() -> dict:
    """Per-core instruction peaks from benchmarks/peak.cc ({} without a compiler or on non-x86)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None or platform.machine() not in ("x86_64", "AMD64"):
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "peak"
        r = subprocess.run([cxx, "-O2", "-march=native", str(REPO / "benchmarks" / "peak.cc"), "-o", str(exe)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return {}
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
        return json.loads(r.stdout) if r.returncode == 0 else {}


# --------------------------------------------------------------------------- measuring
def measure(net: str, paths: dict[str, Path], macs: int, rounds: int, memory: bool) -> list[dict]:
    import qexport.runtime as rt

    spec = NETWORKS[net]
    rng = np.random.default_rng(0)
    records = []
    for bits in spec["bits"]:
        variants = [Variant("ort_float", paths["float"]), Variant("ort_int8", paths["int8"]),
                    Variant("qexport", paths[f"w{bits}"], custom=True)]
        for batch in spec["batches"]:
            x = rng.random((batch, *spec["shape"]), dtype=np.float32)
            for threads in spec["threads"]:
                load0 = load_average()
                big = batch * macs > 200e6
                timing = time_variants(variants, x, threads, rounds=max(4, rounds // 3) if big else rounds,
                                       per_round=1 if big else 3)
                rec = {"network": net, "bits": bits, "batch": batch, "threads": threads,
                       "ort_float_ms": timing.median("ort_float"), "ort_int8_ms": timing.median("ort_int8"),
                       "qexport_ms": timing.median("qexport"),
                       "float_bytes": paths["float"].stat().st_size, "int8_bytes": paths["int8"].stat().st_size,
                       "qexport_bytes": paths[f"w{bits}"].stat().st_size, "macs": macs * batch,
                       "kernel_isa": rt.kernel_isas()[-1], "load_average": [round(load0, 2), round(load_average(), 2)],
                       "runs": len(timing.samples["qexport"])}
                rec["qexport_vs_float"] = rec["qexport_ms"] / rec["ort_float_ms"]
                rec["qexport_vs_int8"] = rec["qexport_ms"] / rec["ort_int8_ms"]
                for v in ("ort_float", "ort_int8", "qexport"):
                    rec[f"{v}_gmacs"] = rec["macs"] / (rec[f"{v}_ms"] * 1e-3) / 1e9
                rec["qexport_gops"] = 2 * rec["qexport_gmacs"]
                if memory:
                    for v in variants:
                        rec[f"{v.name}_memory"] = peak_memory_mb(v, batch, threads, spec["shape"])
                say(f"{net} w{bits} batch {batch} threads {threads}: float {rec['ort_float_ms']:.3f} ms, "
                    f"int8 {rec['ort_int8_ms']:.3f} ms, qexport {rec['qexport_ms']:.3f} ms "
                    f"(x{rec['qexport_vs_float']:.2f} float, x{rec['qexport_vs_int8']:.2f} int8)")
                records.append(rec)
    return records


def profiles(paths: dict[str, Path], shape) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        x = rng.random((batch, *shape), dtype=np.float32)
        runs = 40 if batch == 1 else 8
        out[f"batch{batch}"] = {
            "qexport_w4": profile_ops(Variant("qexport", paths["w4"], custom=True), x, 1, runs),
            "ort_int8": profile_ops(Variant("ort_int8", paths["int8"]), x, 1, runs),
            "ort_float": profile_ops(Variant("ort_float", paths["float"]), x, 1, runs),
        }
    return out


def conv_kind(weight_shape, group: int) -> str:
    """depthwise (one input channel per group), pointwise (1x1) or conv."""
    if len(weight_shape) == 4 and group > 1 and weight_shape[1] == 1:
        return "depthwise conv"
    if len(weight_shape) == 4 and weight_shape[2] == weight_shape[3] == 1:
        return "pointwise conv"
    return "conv" if len(weight_shape) == 4 else "gemm"


def kind_labeler(model_path: Path):
    """A profile_ops label: convs by kind (the qexport ops from their attributes, ONNX Runtime's from the
    model's Conv node whose name the profiled node carries, its weight shape from the initializer, through
    a DequantizeLinear in a QDQ model), other ops by type."""
    import re

    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    dims = {t.name: list(t.dims) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    kinds = {}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        shape = None
        if node.domain == "ai.qexport" and "weight_shape" in attrs:
            shape = list(attrs["weight_shape"])
        elif node.op_type == "Conv" and len(node.input) > 1:
            w = node.input[1]
            if w not in dims and w in producer and producer[w].op_type == "DequantizeLinear":
                w = producer[w].input[0]
            shape = dims.get(w)
        if shape is not None and len(shape) == 4:
            kinds[node.name] = kinds[node.output[0]] = conv_kind(shape, int(attrs.get("group", 1)))
    for node in graph.node:  # a float Conv fused with its activation is named after the activation's output
        if node.op_type in ("Relu", "Clip") and node.input[0] in kinds:
            kinds[node.output[0]] = kinds[node.input[0]]

    def label(event: dict) -> str:
        name = re.sub(r"(_token_\d+|_nchwc)$", "", event["name"][: -len("_kernel_time")])
        return kinds.get(name, event["args"].get("op_name", "?"))

    return label


def kind_profiles(nets: list[str], paths: dict[str, dict[str, Path]]) -> dict:
    """Batch 1, 1 thread: kernel time per run by layer kind, for the networks of KIND_NETWORKS."""
    out = {}
    rng = np.random.default_rng(0)
    for net in nets:
        if net not in KIND_NETWORKS:
            continue
        x = rng.random((1, *NETWORKS[net]["shape"]), dtype=np.float32)
        out[net] = {
            name: profile_ops(Variant(name, paths[net][key], custom=key.startswith("w")), x, 1, 30,
                              label=kind_labeler(paths[net][key]))
            for name, key in (("qexport_w4", "w4"), ("ort_int8", "int8"), ("ort_float", "float"))}
    return out


# --------------------------------------------------------------------------- the report
def fmt_ratio(r: float, target: float) -> str:
    return f"**{r:.2f}**" if r <= target else f"{r:.2f} ({r / target:.2f}x the {target})"


def fmt_miss(r: float, target: float) -> str:
    return f"**{r:.2f}**" if r <= target else f"{r:.2f} (+{r - target:.2f})"


def write_markdown(doc: Path, result: dict) -> None:
    # Over 80 lines on purpose: a report generator is one linear sequence of sections; splitting it
    # would scatter the page's order over helpers without sharing any logic.
    recs = result["records"]
    env = result["environment"]
    peaks = result.get("peaks", {})
    lines = [
        "# Performance: qexport against ONNX Runtime's float and int8 paths",
        "",
        f"Produced by `python benchmarks/bench.py` on {result['date']} (do not edit by hand; the numbers are in "
        "[benchmarks/results/performance.json](../benchmarks/results/performance.json)).",
        "",
        f"Machine: {env['cpu'].get('model', '?')}, {env['cpu'].get('cpus')} cores "
        f"({', '.join(env['cpu'].get('flags', []))}); ONNX Runtime {env['onnxruntime']}; qexport kernel path "
        f"`{env['kernel_isa']}` (available: {', '.join(env['kernel_isas'])}). Load average before measuring: "
        f"{env['quiet']['load_at_start']:.2f} ({'quiet' if env['quiet']['quiet'] else 'NOT quiet: another job was running; the ratios are measured interleaved, so they stay meaningful, absolute times are not'}).",
        "",
        "Method: the three models of each network (ONNX Runtime float, ONNX Runtime int8 QDQ, qexport) run in one "
        "process, interleaved: each round runs every model once untimed, then 3 timed runs (1 at large batches); the "
        "table gives the median over all rounds. Inputs are random in [0, 1). Weights are random-init (ResNets) or "
        "the shipped trained model (CNN); calibration inputs as described in benchmarks/bench.py. Peak memory: a "
        "fresh process loads onnxruntime, creates the session and runs it 3 times; its peak resident set (VmHWM of /proc/self/status; getrusage's ru_maxrss is useless here: it survives execve, so a child forked from the benchmark reported the benchmark's size).",
        "",
        "## ResNet-20: the targets of issue 4",
        "",
        f"Targets: qexport latency at most {TARGETS['vs_float']}x ONNX Runtime float and at most {TARGETS['vs_int8']}x "
        "ONNX Runtime int8 QDQ, measured in the same run. A ratio in bold meets its target; otherwise the table "
        "says by how much it misses.",
        "",
        "| bits | batch | threads | ORT float ms | ORT int8 ms | qexport ms | qexport / float | qexport / int8 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        if r["network"] != "resnet20":
            continue
        lines.append(f"| {r['bits']} | {r['batch']} | {r['threads']} | {r['ort_float_ms']:.3f} | {r['ort_int8_ms']:.3f} | "
                     f"{r['qexport_ms']:.3f} | {fmt_ratio(r['qexport_vs_float'], TARGETS['vs_float'])} | "
                     f"{fmt_ratio(r['qexport_vs_int8'], TARGETS['vs_int8'])} |")
    lines += ["", "## Every network against the targets of issue 16", "",
              f"Targets: in every cell at most {TARGETS_EVERY['vs_int8']}x ONNX Runtime int8's latency and at most "
              f"{TARGETS_EVERY['vs_float']}x ONNX Runtime float's. A ratio in bold meets its target; otherwise "
              "(+d) says by how much it misses. Why the misses: the notes below.", "",
              "| network | bits | batch | threads | qexport / int8 | qexport / float |", "|---|---|---|---|---|---|"]
    met = 0
    for r in recs:
        ok = r["qexport_vs_int8"] <= TARGETS_EVERY["vs_int8"] and r["qexport_vs_float"] <= TARGETS_EVERY["vs_float"]
        met += ok
        lines.append(f"| {NETWORKS[r['network']]['title']} | {r['bits']} | {r['batch']} | {r['threads']} | "
                     f"{fmt_miss(r['qexport_vs_int8'], TARGETS_EVERY['vs_int8'])} | "
                     f"{fmt_miss(r['qexport_vs_float'], TARGETS_EVERY['vs_float'])} |")
    lines += ["", f"Both targets met in {met} of {len(recs)} cells."]
    for m in result.get("other_machines", []):
        lines += ["", f"### The same on another machine: {m['cpu']}, kernel path `{m['kernel_isa']}` ({m['date']})", "",
                  f"The last full run there ([{m['file']}](../{m['file']})): the range of each network's cells per "
                  "thread count (bits, batch sizes).", "",
                  "| network | threads | qexport / int8 | qexport / float | cells meeting both |", "|---|---|---|---|---|"]
        for row in m["rows"]:
            lines.append(f"| {NETWORKS[row['network']]['title']} | {row['threads']} | "
                         f"{row['vs_int8'][0]:.2f}-{row['vs_int8'][1]:.2f} | {row['vs_float'][0]:.2f}-{row['vs_float'][1]:.2f} | "
                         f"{row['met']} of {row['cells']} |")
    lines += ["", "## Every network", "",
              "GOPS: 2 x multiply-accumulates per second of the qexport model. Sizes in KB; peak memory in MB "
              "(float / int8 / qexport).", "",
              "| network | bits | batch | threads | ORT float ms | ORT int8 ms | qexport ms | / float | / int8 | GOPS | "
              "size float / int8 / qexport KB | peak MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        mem = "-"
        if "qexport_memory" in r:
            mem = " / ".join(f"{r[f'{v}_memory']['peak_mb']:.0f}" for v in ("ort_float", "ort_int8", "qexport"))
        lines.append(f"| {NETWORKS[r['network']]['title']} | {r['bits']} | {r['batch']} | {r['threads']} | "
                     f"{r['ort_float_ms']:.3f} | {r['ort_int8_ms']:.3f} | {r['qexport_ms']:.3f} | "
                     f"{r['qexport_vs_float']:.2f} | {r['qexport_vs_int8']:.2f} | {r['qexport_gops']:.0f} | "
                     f"{r['float_bytes'] / 1024:.0f} / {r['int8_bytes'] / 1024:.0f} / {r['qexport_bytes'] / 1024:.0f} | {mem} |")
    prof = result.get("profile", {})
    if prof:
        lines += ["", "## Where the time goes (ResNet-20, 1 thread)", "",
                  "Kernel time per run by op type, from ONNX Runtime's profiler (`_run` is the whole model_run, "
                  "which adds the framework's own work between kernels; profiling itself slows small ops).", ""]
        for bkey, models in prof.items():
            lines += [f"### batch {bkey.replace('batch', '')}", ""]
            for mname, ops in models.items():
                run_us = ops.get("_run", {}).get("us", float("nan"))
                rows = [(op, v) for op, v in ops.items() if op != "_run"]
                lines.append(f"**{mname}** (model_run {run_us:.0f} us): " + ", ".join(
                    f"{op} {v['us']:.0f} us ({100 * v['share']:.0f}%, {v['nodes']} nodes)" for op, v in rows[:8]))
                lines.append("")
    kinds = result.get("kind_profile", {})
    if kinds:
        lines += ["## Where the time goes in MobileNetV2 (batch 1, 1 thread, by layer kind)", "",
                  "Kernel time per run (us) of each kind of layer, from ONNX Runtime's profiler (its own overhead "
                  "included: the sums exceed the timed latencies above). qexport: one QConvFused per conv (its "
                  "epilogue and the next quantizer included); ONNX Runtime: QLinearConv / Conv nodes.", ""]
        for net, models in kinds.items():
            names = ["depthwise conv", "pointwise conv", "conv", "gemm"]
            lines += [f"**{NETWORKS[net]['title']}**", "",
                      "| model | " + " | ".join(names) + " | other ops | all kernels |", "|---" * (len(names) + 3) + "|"]
            for mname, ops in models.items():
                rows = {op: v["us"] for op, v in ops.items() if op != "_run"}
                other = sum(v for op, v in rows.items() if op not in names)
                lines.append(f"| {mname} | " + " | ".join(f"{rows.get(k, 0):.0f}" for k in names) +
                             f" | {other:.0f} | {sum(rows.values()):.0f} |")
            lines.append("")
    if peaks:
        # the dot instruction of qexport's path: vpdpbusd (zmm) with VNNI, else vpmaddubsw (ymm, AVX2)
        dot = "vpdpbusd" if "int8_vpdpbusd_zmm_gmacs" in peaks else "vpmaddubsw"
        dot_peak = peaks.get("int8_vpdpbusd_zmm_gmacs") or peaks.get("int8_vpmaddubsw_ymm_gmacs")
        zmm = "fp32_fma_zmm_gflops_mac" in peaks
        lines += ["## Roofline: achieved multiply-accumulates against the machine's peaks", "",
                  "Per-core peaks measured by benchmarks/peak.cc (independent register-only chains of one "
                  "instruction, one thread): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + " (G per s).",
                  "", "Achieved GMAC/s (MACs of the float network / latency), and as a share of the peak of the "
                  f"instruction each runtime's inner loop uses (x threads): fp32 FMA ({'zmm' if zmm else 'ymm'}) for "
                  f"float, {dot} ({'zmm' if dot == 'vpdpbusd' else 'ymm'}) and AMX for int8 / qexport.", "",
                  "| network | bits | batch | threads | float GMAC/s (% fp32 peak) | int8 GMAC/s | qexport GMAC/s | "
                  f"qexport % {dot} peak | qexport % AMX peak |", "|---|---|---|---|---|---|---|---|---|"]
        fp32 = peaks.get("fp32_fma_zmm_gflops_mac") or peaks.get("fp32_fma_ymm_gflops_mac")
        amx = peaks.get("int8_amx_tdpbsud_gmacs")
        for r in recs:
            t = r["threads"]
            pct = lambda v, p: f"{100 * v / (p * t):.0f}%" if p else "-"  # noqa: E731
            lines.append(f"| {r['network']} | {r['bits']} | {r['batch']} | {t} | {r['ort_float_gmacs']:.0f} "
                         f"({pct(r['ort_float_gmacs'], fp32)}) | {r['ort_int8_gmacs']:.0f} | {r['qexport_gmacs']:.0f} | "
                         f"{pct(r['qexport_gmacs'], dot_peak)} | {pct(r['qexport_gmacs'], amx)} |")
    lines += ["", "## Notes", ""] + NOTES + [""]
    if result.get("arm_icount"):
        from arm_icount import markdown as arm_markdown

        lines += arm_markdown({**result["arm_icount"], "notes": ARM_NOTES},
                              {n: spec["title"] for n, spec in NETWORKS.items()})
    if result.get("convert_scale"):
        from convert_scale import markdown as convert_markdown

        lines += convert_markdown(result["convert_scale"])
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(doc)


NOTES = [
    "* What qexport runs: per layer one fused node (`QConvFused`: the conv, the residual Add, the ReLU and the "
    "next layer's ASQ quantizer; docs/ops.md), weights re-packed at session creation, a direct convolution over "
    "codes re-laid out into 4-channel cells (`avx512vnni`: vpdpbusd; `amx`: AMX tiles, the default where the CPU "
    "has them), the float epilogue and the ASQ statistics of the output computed while it is in cache. ONNX "
    "Runtime's int8 QDQ model keeps uint8 activations between QLinearConv nodes and uses MLAS's VNNI/AMX GEMMs.",
    "* What limits further gains at batch 1: the dot products are no longer the main cost (AMX does them at a "
    "small fraction of the time); what remains per layer is work on every activation that the definition "
    "requires and ONNX Runtime's int8 path does not do: the float32 output and its ReLU/residual epilogue, the "
    "ASQ adapter's spatial means (float64, in the 8-lane order of docs/ops.md: defining the sum that way "
    "instead of as one running sum per channel took ResNet-20 at 1 thread from 0.93x to 0.83x ONNX Runtime "
    "int8's time at batch 1 and from 0.89x to 0.67x at batch 32, in interleaved runs), the quantizer's "
    "division-exact rounding, and the re-layout of the codes; plus ONNX Runtime's fixed cost per node and per "
    "run, which is the same for all three models and is a large share of a 0.2-0.5 ms run.",
    "* At batch 32 the activations of a layer (2 MB float at 16x32x32) no longer fit the core's L2 cache; each "
    "sample is computed by one task from its re-layout to its codes, so a sample's data stays in cache between "
    "the conv, the epilogue and the quantizer.",
    "* With 2 threads at batch 1, a conv of fewer than 4M multiply-adds (32M on the AMX path) runs in the "
    "calling thread: splitting ResNet-20's 2.4M-MAC convs over ONNX Runtime's thread pool "
    "(KernelContext_ParallelFor) made the model 1.4x slower than 1 thread (measured: 0.33 ms against 0.22 ms), "
    "because each conv takes about 10 us and the re-layout and the quantizer of a single image are serial. So "
    "a second thread barely helps qexport at batch 1 on ResNet-20, while ONNX Runtime's float gets about 1.3x "
    "from it: that is why the 2-thread batch-1 ratio to float is the tightest of the table. Larger convs "
    "(ResNet-18) are split.",
    "* Run-to-run spread, found and fixed: two runs of this script 10 minutes apart (same build, quiet machine) "
    "once gave ResNet-20 w4 at batch 32, 1 thread, 5.12 and 5.87 ms (0.69x and 0.79x int8), while ONNX Runtime's "
    "times repeated within 2%. The per-thread re-layout buffers came from malloc (16-byte aligned), so where a "
    "process's heap put them decided how many 64-byte loads split across cache lines. With the buffers on "
    "64-byte boundaries (`Scratch` in custom_ops/include/qexport/common.h) four separate processes gave "
    "4.74-4.92 ms at batch 32 and 0.174-0.177 ms at batch 1.",
    "* MobileNetV2 (run of 2026-12-02): qexport takes 1.9-2.5x ONNX Runtime int8's time and 1.2-1.9x float's; "
    "no cell meets issue 16's targets. Its depthwise convs first ran as grouped convs of the dense kernels (one "
    "4-channel cell and an 8- or 16-channel weight block per single-channel group: 32-64x the multiply-adds): the "
    "CIFAR network took 6.0 ms at batch 1 (6.2x int8). The depthwise kernel (docs/ops.md, 'Kernel paths': float32 "
    "stride-phase planes, exact below 2^24, fused multiply-add, several channels at a time on small planes) took "
    "it to 2.1 ms. What remains is per-value work, and MobileNetV2 has 6x-expanded activations with few "
    "multiply-adds per value (9 for a depthwise conv, 16-160 for a pointwise one): every conv writes its float "
    "output, the ASQ quantizer then reads it twice (float64 means, then the division-exact codes), and the "
    "depthwise kernel converts its input codes to float planes; ONNX Runtime's QLinearConv requantizes in its "
    "GEMM's output loop. The layer-kind table shows both kinds about equal in qexport, and qexport's depthwise "
    "convs at 3x ONNX Runtime int8's and 4x its float's (NCHWc) time.",
    "* Not understood yet: the QConvFused nodes of MobileNetV2 (CIFAR) timed one at a time (a one-node model, "
    "same shapes and attributes, inputs in the same range) add up to about 1.0 ms at batch 1, half the 2.1 ms of "
    "the model; the depthwise node features.3.conv.1.0 takes ~100 us alone and ~180 us in the model (profiler). "
    "Cache state between nodes, ONNX Runtime's per-node work and the inputs' real distribution are the candidates.",
    "* Depthwise kernel, second pass (2026-12-02, measured on an AMD EPYC (Zen 3) with the avx2 path, interleaved "
    "sessions, ONNX Runtime's profiler): the phase planes are filled straight from the codes (vpmovzxbd + vcvtdq2ps "
    "per vector; the padding zeroed once per task and only the positions inside the input written per channel, a "
    "row's last vector masked so that its spill writes zeros; no float copy of the input plane), the epilogue a "
    "vector at a time, and the masks of the rows' last vectors built once per task (built per channel through the "
    "stack they stalled on store forwarding). MobileNetV2 (CIFAR)'s depthwise nodes take 15-27% less time (the "
    "stride-2 ones the most), the 960x4x4 node 85 -> 65 us (ONNX Runtime int8: 22 us), the model 0.92-0.94x its "
    "time. What the kernel spends then (perf): the multiply-adds ~30%, filling the planes ~40%, the epilogue ~20%: "
    "on 4x4-8x8 planes the work per row dominates. On that machine a node timed alone takes what it takes in the "
    "model (65 against 68 us), unlike the 2x gap seen on the Xeon.",
    "* AVX2-only CPUs (AMD EPYC Zen 3: no VNNI, no AMX; the Xeon's run summarized beside it). In the run of "
    "2026-12-02 12:35 qexport was slower than ONNX Runtime int8 on every network there, at 1 thread batch 1 "
    "ResNet-20 1.14x, the Fashion-MNIST CNN 1.38-1.41x, ResNet-18 1.40-1.49x, MobileNetV2 (CIFAR) 1.80-1.86x "
    "int8's time; with 2 threads at batch 1 worse (ResNet-20 1.32-1.78x: its convs were not split and int8 gains "
    "1.6x). Session 16 (same machine type) changed four things, each measured by interleaved A/B sessions at "
    "batch 1 (ratios of medians; absolute times there swing 1.5x from minute to minute): (1) the conv adds the "
    "int16 pair sums of 4 steps before one vpmaddwd where the codes' and weights' bound allows (docs/ops.md: "
    "codes of up to 5 bits), 5 multiplies per 4 steps instead of 8: ResNet-20 0.86-0.88x its time, the CNN "
    "0.88x, MobileNetV2 (CIFAR) 0.93x; (2) the epilogue of a whole 8x8 block straight from the dot product's "
    "registers: 0.96-0.97x; (3) a depthwise kernel that vectorizes over channels on planes of at most 256 "
    "outputs (next note); (4) the single-image split thresholds 8x lower on avx2 (SimdKernels::parallel_shift): "
    "with 2 threads ResNet-20 0.76x, the CNN and MobileNetV2 (CIFAR) 0.84x their time (1 thread unchanged within "
    "2%). The table above is the run after them. Both use vpmaddubsw + "
    "vpmaddwd + vpaddd; MLAS's AVX2 kernel blocks 4 rows x 24 columns (4 broadcasts and 3 loads feed 12 cells), "
    "qexport's conv 8 positions x 8 channels (8 broadcasts feed 8 cells). A microbenchmark of the conv's inner loop "
    "(one step of 4 input channels for 8 positions x 8 channels, minimum of 60 runs): 2.8 ns as built; adding the "
    "pair sums of up to 17 steps in int16 first (half the multiplies, exact since 17 * 2 * 15 * 64 < 2^15) 3.8 ns, "
    "because GCC spills one of the 8 int16 accumulators into the loop-carried chain, and 2.5-2.6 ns with inline "
    "asm that keeps them in registers; 2 vectors x 4 channels 2.7 ns; weights pre-broadcast in memory 2.7 ns. The "
    "loop is bound by vector uops (about 4 per cycle), not by the multiplies alone; MLAS-like register blocking "
    "(3 position vectors x 4 channels, 12 cells per 7 loads) is not done. What did pay in the model is (1) above: "
    "the int16 sums of 4 whole steps need no extra accumulators (4 activation vectors, 8 int32 sums), so nothing "
    "spills. Tried and not kept: FMA in the depthwise kernel (-mfma; no change, its loop is bound by the "
    "loop-carried adds), the epilogue's scale and bias on channel vectors before the transpose (1.04-1.07x slower), "
    "the channel-vectorized depthwise kernel on 32x32 planes (1.15x slower than the plane kernel: the tile leaves L1).",
    "* Two threads at batch 1 (measured on the Xeon; on avx2 every threshold below is 8x lower, see the AVX2 "
    "note): a conv whose output has at least 2^15 values is split over the threads (not only "
    "by its multiply-adds), and so is a single image's quantizer (means by channels, codes by ranges); depthwise "
    "convs from 2^19 multiply-adds. MobileNetV2@224 went from 7.1 ms (2 threads, no better than 1) to 5.5 ms; "
    "ResNet-20 is unchanged (its largest output, 16x32x32, stays below 2^15: at 2^14 it was 1.2x slower with 2 "
    "threads than with 1). MobileNetV2 (CIFAR) still gains nothing from a second thread at batch 1 (ONNX Runtime "
    "int8 gains 1.16x): its 4x4-16x16 layers are below every threshold.",
    "* Depthwise convs on small planes (session 16, avx2; docs/ops.md 'Kernel paths'): the plane kernel spends "
    "most of a 4x4 or 8x8 plane's time on per-row work (filling rows of 4-8 values, padded rows summed, the "
    "epilogue row by row). For a conv with one output channel per input channel and at most 256 output "
    "positions, a second kernel puts 8 channels of one position in a vector: 8 channels' codes transposed "
    "(8x8, vunpck/vshufps/vperm2f128) into a zero-padded tile, 8 positions summed over the taps at once in 8 "
    "registers, transposed back for the epilogue. MobileNetV2 (CIFAR)'s 960x4x4 node 0.62x the plane kernel's "
    "time, its 576x8x8 stride-2 node 0.45x, the 384x8x8 node 0.87x, 16x16 no change; the model 0.93-0.96x at "
    "batch 1 and 0.88-0.92x at batch 32. The ARM paths use it too (4 channels per q register, trn1/trn2 "
    "transposes, fmla; see the ARM section); avx512vnni and amx run avx2's ymm kernels since session 21 (a "
    "zmm version measured no faster on Zen 4).",
    "* Session 17 (2026-12-02, the same AMD EPYC (Zen 3) VM, avx2; interleaved A/B sessions at batch 1, 1 "
    "thread): (1) the conv re-layout builds only the stride-phase planes some tap reads (a 1x1 conv at stride 2 "
    "reads one of its four) and the AVX2 rows at stride 2 go by vector (the even bytes of two loads): ResNet-18's "
    "1x1 stride-2 node 0.65x its time, the model 0.976x, ResNet-20 0.983x; (2) an ASQ conv whose output has over "
    "2^18 values a sample computes it by whole channel blocks and takes each block's plane means right after it, "
    "while it is in cache, instead of reading the whole output back from memory: MobileNetV2@224's 16->96 1x1 "
    "node at 112x112 0.74x its time (perf before: dot and epilogue 41%, quantizer 20%, means 16%), the model "
    "0.93-0.99x; (3) the channel-vectorized depthwise kernel up to a 34x34 padded input, so MobileNetV2 (CIFAR)'s "
    "stride-2 layer from 32x32 takes it: that node 0.85x (still 2.3x ONNX Runtime int8's: converting and "
    "transposing 147K codes costs more than its 332K multiply-adds). Measured and not kept: computing each block "
    "twice (its means in a first pass, its codes in a second, nothing written to memory) was 1.15-1.5x slower "
    "on MobileNetV2's expansion nodes at 32x32 (their outputs stay in L2 anyway) and no faster at 112x112; "
    "the quantizer split at 2^15 instead of 2^12 values with 2 threads (within noise).",
    "* The dot product on AVX2, measured again (session 17): instruction rates on this VM (2.89 GHz by a "
    "dependent add chain): vpmaddubsw 1.5 per cycle, vpbroadcastd from memory 1.35, vpaddw 2.2, a mix of 3 "
    "vpmaddubsw + 3 vpaddw + 2 broadcasts 2.5. The conv's loop (per step of 4 channels x 8 positions x 8 output "
    "channels: 8 broadcasts, 8 vpmaddubsw, 6 vpaddw, 2 vpmaddwd, 2 vpaddd) takes 3.4 ns (9.8 cycles) in "
    "isolation on ResNet-18's 56x56x64 3x3 geometry, about 75 GMAC/s; ONNX Runtime's QLinearConv does that whole "
    "node at 64 GMAC/s and qexport's node (with its float output, means and quantizer) at 44-49 GMAC/s in the "
    "same runs. Variants, all slower: 3 position vectors x 4 channels with the activations as vpmaddubsw's "
    "memory operand (weights offset to unsigned, int16 sums widened every 8-32 steps; inline asm, no spills) "
    "3.7-4.6 ns per equivalent step; weights broadcast by vpshufd from two 32-byte loads per step (inline asm) "
    "4.5-5.9 ns; weights pre-broadcast in memory 4.0-4.3 ns; 2x4 and 3x4 blocking in intrinsics spill (GCC) and "
    "were 1.06x slower / equal in the model. So on an AVX2-only CPU the 3-4-bit codes go through the same "
    "vpmaddubsw as int8, the int16 pair sums already remove most of the widening, and the gap to ONNX Runtime "
    "int8 (1.2-1.5x its time on ResNet-18 and MobileNetV2) is the per-value work of the definition (float32 "
    "output, float64 means, division-exact codes) and the NCHW layout (MLAS runs these models NHWC). 0.6x int8 "
    "there needs a different arithmetic, not tuning; the VNNI/AMX paths (Xeon, 0.65-0.70x on ResNet-20) are "
    "where the targets are within reach.",
    "* Session 18 (2026-12-02, the same AMD EPYC (Zen 3) VM, avx2): the depthwise plane kernel in int16 lanes "
    "where every partial sum fits int16 (docs/ops.md, 'Kernel paths': vpmullw + vpaddw on 16 lanes, codes "
    "widened by vpmovzxbw instead of converted to float, sums to float for the epilogue), on planes of more than "
    "128 outputs. Interleaved per-node profile on MobileNetV2 (CIFAR): the 32x32 depthwise nodes 0.84-0.86x their "
    "time, the 16x16 ones 0.80-0.82x (there instead of the float32 channel kernel, which stays on the 8x8 and "
    "4x4 planes: the int16 plane kernel took 1.6-2.2x its time there); the model 0.95-0.96x at batch 1, "
    "MobileNetV2@224 0.94-1.00x (interleaved A/B, 1 thread). perf on MobileNetV2 (CIFAR) after it: the "
    "pointwise dot products 35%, the depthwise kernels 19% (the float32 channel kernel 9%, the int16 plane "
    "kernel's plane filling 4%, its multiply-adds 3%, its epilogue 3%), the quantizer 9%, the re-layout 7.5%, "
    "the means 6%, the ASQ adapter 2%. Measured and not kept (no change outside noise): the ASQ adapter's rows "
    "four at a time with its group bounds stepped without divisions, and a single image's quantizer in tasks "
    "of 2^12 instead of 2^15 values on avx2 (at 2 threads, ResNet-20, the CNN and MobileNetV2 (CIFAR) within "
    "0.98-1.00x). In this run (quiet: load 0.62) the 2-thread cells at batch 1 are the worst of each small "
    "network (ResNet-20 1.13-1.15x int8 against 0.98x at 1 thread, the CNN 1.37-1.41x against 1.17-1.21x, "
    "MobileNetV2 (CIFAR) 1.66-1.75x against 1.48-1.49x): ONNX Runtime int8 gains 1.5-1.6x from the second "
    "thread there, qexport 1.3-1.4x. Serial in a single image: the re-layout, the adapter and the convs below "
    "the split thresholds; which of them costs the difference is not measured yet.",
    "* Session 19 (2026-12-03, the same AMD EPYC (Zen 3) VM, avx2): two threads at batch 1. perf of ResNet-20 "
    "at 2 threads (per thread) showed the worker idle for half of its samples while the calling thread ran the "
    "re-layout (7.7% of its samples), the quantizer (4.3%), the op's per-call setup (3.9%, 40% of it building "
    "the conv's vector tables) and the means (2.9%) alone; skipping the single-image re-layout altogether (a "
    "timing probe, wrong results) took the model to 0.87x at 2 threads but 0.93x at 1: the serial re-layout "
    "cost twice its share at 2 threads, as the other core then reads a buffer this one wrote. Kept: (1) a single "
    "image whose tasks each take every channel block is split into bands of output rows, each task re-laying "
    "out the rows its vectors read into its own thread's buffer (docs/ops.md, 'Kernel paths'; bands of at "
    "least 4 * row_max rows: 2 * and 1 * were 1-2% slower on ResNet-20, 1% faster on the CNN); (2) the conv's "
    "vector and step tables kept per input size instead of rebuilt every call; (3) a large buffer (2^14 cells "
    "or more) of a conv split by channel blocks re-laid out by parallel bands of rows (MobileNetV2@224 0.965x "
    "at 2 threads, 1.003-1.008x at 1; ResNet-18 0.99x). (1) and (2) together, batch 1: ResNet-20 0.90x its "
    "time at 2 threads and 0.97x at 1, the CNN 0.90-0.95x and 0.96-0.98x, MobileNetV2 (CIFAR) 0.96x and "
    "0.98x. Measured as pooled per-run percentiles (p10, p25, p50 agreeing) of alternating processes, one "
    "library each: two sessions with their own thread pools in one process swung by +-4% at 2 threads. "
    "What is left at 2 threads: MobileNetV2 (CIFAR)'s 8x8 and 4x4 nodes gain 1.09-1.25x from the second "
    "thread where ONNX Runtime int8's gain 1.18-1.6x (ONNX Runtime's profiler, which inflates both), and a "
    "single image's quantizer below 2^15 values is one task (2^12 was measured and not kept in session 18).",
    "* Session 20 (2026-12-03, the same AMD EPYC (Zen 3) VM, avx2; each change measured by alternating processes, "
    "one library each, pooled per-run p10/p25/p50, batch 1, 1 thread): (1) the re-layout of a 1x1 conv at stride 1 "
    "without padding as one contiguous run per plane of 4 channels, and the AVX2/NEON interleave on rows of 4-15 "
    "cells 8 and 4 cells at a time (MobileNetV2 (CIFAR)'s 8x8 and 4x4 planes went cell by cell: perf had the "
    "re-layout at 8.4% of its time, 2.7% after): MobileNetV2 (CIFAR) 0.92x its time, ResNet-20 0.97-0.99x; (2) "
    "an AVX2 int16 channel-vectorized depthwise kernel (16 channels per ymm, docs/ops.md) on the small planes: "
    "MobileNetV2 (CIFAR) 0.95x, its 8x8 and 4x4 depthwise nodes 0.78-0.85x, the 16x16 ones 0.87-0.94x (on 32x32 "
    "outputs 1.25x the plane kernel's time: not used there); (3) a folded layout for one-channel inputs with "
    "kernels of 2-4 columns (the CNN's stem: its cells were 3/4 padding): the CNN 0.93x; (4) nibble-split codes "
    "(8-bit codes with weights past +-64: the 8-bit stems) add two steps' int16 pair sums per nibble before "
    "widening: ResNet-18's 7x7 stem 0.83x its time (4.0 ms against ONNX Runtime int8's 2.2 ms before), the model "
    "0.977x; (5) a partial vector's segments stored 4, 2 and 1 values at a time: the CNN 0.978x. Measured and "
    "not kept: the ASQ conv by whole channel blocks from 2^16 or 2^17 outputs instead of 2^18 (0.98-0.99x, "
    "noise), the ASQ adapter's rows four at a time (no change, as in session 18), the int16 channel kernel's "
    "epilogue unrolled (no change), masked stores (vmaskmovps) for partial vectors (1.015x: slower on Zen 3), a "
    "single image's quantizer in tasks of 2^11-2^13 values at 2 threads (0.92-1.08x from one run to the next: "
    "within this VM's 2-thread noise). Per node after (1)-(2) (ONNX Runtime's profiler, 1 thread), MobileNetV2 "
    "(CIFAR): depthwise nodes 1.3-1.5x ONNX Runtime int8's time, the 24->144 expansions at 32x32 1.8-1.9x (K = 24: "
    "per output value the float epilogue, the float64 means and the quantizer outweigh its 24 multiply-adds), the "
    "projections 1.3-1.5x; ResNet-18's 3x3 convs 0.95-1.08x. Benchmark run of 10:19 against the session's first "
    "(07:41 the session before): ResNet-20 0.88-1.03x int8 (0.89-1.04), the CNN 0.98-1.23x (1.12-1.34), "
    "ResNet-18 1.07-1.16x (1.15-1.32), MobileNetV2 (CIFAR) 1.19-1.40x (1.41-1.68), MobileNetV2@224 1.29-1.45x "
    "(1.40-1.53).",
    "* Session 21 (2026-12-03, an AMD EPYC (Zen 4) VM with AVX-512 VNNI: the first avx512vnni run since the "
    "Xeon's, and the first on AMD; 2 cores). Before any change (run of 11:46) MobileNetV2 was far behind here: "
    "(CIFAR) 1.83-2.11x ONNX Runtime int8 at 1 thread, 1.64-2.59x at 2; @224 1.63-1.73x and 1.59-2.18x; perf "
    "put a third of MobileNetV2 (CIFAR)'s time in avx512vnni's zmm float32 depthwise plane kernel, which had "
    "neither the channel kernel nor the int16 variants of avx2. Kept, each measured by alternating processes "
    "(one library each, pooled per-run p10/p25/p50, batch 1): (1) avx512vnni and amx run avx2's ymm depthwise "
    "kernels (int16 channel and plane kernels; the zmm float32 plane kernel only where neither applies): "
    "MobileNetV2 (CIFAR) 0.81x its time, @224 0.87-0.90x (a zmm int16 plane kernel, 32 lanes, was no faster: "
    "1.00-1.08x; Zen 4 runs a zmm operation as two halves); (2) the conv epilogue of whole vectors in registers "
    "at the end of the dot product: MobileNetV2 (CIFAR) 0.94-0.96x, ResNet-20 0.97x, single nodes 0.86-0.94x "
    "(the 16->96 expansion at 32x32) and 0.97-1.0x (ResNet-18's 3x3 convs); (3) the quantizer tests two vectors "
    "at once for the rare division (the test and branch were ~40% of its time): MobileNetV2 0.96-0.965x; (4) the "
    "depthwise int16 channel kernel's weights packed once instead of converted per call: MobileNetV2 (CIFAR) "
    "0.98x; (2)-(4) together 0.87-0.92x on MobileNetV2 (CIFAR) (16-20 rounds in each order), 0.97-0.98x on "
    "ResNet-20, 0.97-1.0x on ResNet-18; (5) avx512vnni's single-image split thresholds divided by 8 (as avx2): "
    "at 2 threads MobileNetV2 (CIFAR) ~0.93x, @224 ~0.92x, ResNet-20 ~0.94x, the CNN and ResNet-18 unchanged. "
    "Not kept: the ASQ means' lane reduction in vectors (no change), the AVX2 quantizer testing 4 vectors at "
    "once (no change with avx2 forced on Zen 4). Noise here: an A/A pair of the same library differed by up to "
    "7-14% at 5 rounds of 3 s; the machine's speed drifted by 1.6x within the session (MobileNetV2 (CIFAR) "
    "1.38 ms at 11:59, 2.2 ms at 12:20), so every comparison above alternated processes in both orders. Why "
    "the targets stay out of reach on VNNI hardware: qexport's conv loop runs at the instruction's peak (a "
    "microbenchmark of dot2 at ResNet-18's geometries: 3.45-3.62 G vpdpbusd/s against benchmarks/peak.cc's "
    "3.64 G, 64 multiply-adds each), and so does MLAS's int8 GEMM on the same vpdpbusd (ResNet-18's 3x3 convs "
    "at 83-95% of that peak by ONNX Runtime's profiler), so 3-4-bit codes in 8-bit lanes cannot be faster than "
    "int8's; qexport loses besides to its layout on small planes (a 7x7 plane with its 2 padding columns fills "
    "4 vectors of 16 with 49 outputs: ResNet-18's 7x7 3x3 convs take 664 us of dot products against 502 us "
    "without waste), and to the definition's per-value float work (perf, MobileNetV2 (CIFAR) after (1)-(3): "
    "depthwise 25%, pointwise dot products and epilogues 30%, quantizer 10%, means 9%, ASQ adapter "
    "3%). Benchmark runs after the changes, 13:01 and 13:04 (the table is the second; the machine was slower "
    "than in the morning in both, and the 2-thread cells swing between them, e.g. ResNet-20 w4 at batch 1 1.32x "
    "then 0.98x): at 1 thread ResNet-20 0.83-1.00x int8, the CNN 1.03-1.11x, ResNet-18 1.17-1.23x, MobileNetV2 "
    "(CIFAR) 1.40-1.57x, MobileNetV2@224 1.31-1.48x.",
    "* Session 22 (2026-12-03, the same AMD EPYC (Zen 4) VM, avx512vnni). Measuring first: benchmarks/ab.py "
    "(new) times two builds of the op library in one process (a session each, one shared intra-op thread pool, "
    "runs alternated A,B then B,A) after checking that they compute the same bits; the same library on both "
    "sides came out within 0.5-2.2% (MobileNetV2 (CIFAR) at 1 and 2 threads, ResNet-20 at 2), where two "
    "alternating processes had disagreed by 7-14% (session 21). Kept, batch 1: (1) a single image's depthwise "
    "conv split into an even number of tasks of whole channel vectors, each task taking its channels' ASQ "
    "means right after it, and the quantizer's means and codes in even task counts too (ONNX Runtime hands "
    "equal tasks to its threads in turn: MobileNetV2 (CIFAR)'s 8x8 depthwise convs ran as 3 tasks of 128 "
    "channels, 2 on one thread and 1 on the other); "
    "(2) the ASQ adapter's hidden units summed 8 side by side (each still one sequential sum; one at a time "
    "was 64 x 16 dependent float64 additions per call at the widest adapter, 3.5% of MobileNetV2 by perf) and "
    "its group bounds stepped without 64-bit divisions; the depthwise int16 channel kernel on a local copy of "
    "its task (its may_alias vector stores made GCC reload three task fields for every tile position: 30% of "
    "the kernel by perf) zeroing only the tile's padding. The session's library against the one before it "
    "(both Release builds, ab.py, batch 1): MobileNetV2 (CIFAR) 0.99-1.00x at 1 thread and 0.93-0.945x at 2, "
    "MobileNetV2@224 0.99x and 0.96-0.98x, ResNet-20 and the CNN 0.99-1.01x at both. Then (3): a single "
    "image's ASQ conv split by channel blocks on a plane of at most 4 vector groups (MobileNetV2's and "
    "ResNet-18's 8x8, 7x7 and 4x4 stages) gives each task every vector of its blocks and then their plane "
    "means, instead of a parallel section of its own for the means: at 2 threads MobileNetV2 (CIFAR) "
    "0.97-0.986x, MobileNetV2@224 0.97x, ResNet-18 0.98x, ResNet-20 unchanged; at 1 thread 0.99-1.0x "
    "(test_pointwise_single_image_task_means). Tests: the split cases' ASQ adapter clamped beta to 1e-8 "
    "whatever the means (z < 0), "
    "so a kernel that stored each task's means one channel early passed them; the helper now builds an "
    "adapter that acts on the case's output, and a new test runs single-image depthwise tasks (that mutation "
    "fails 20 of its 30 cases). Not kept (ab.py): the quantizer in tasks of 2^13 values (MobileNetV2 0.98-"
    "0.99x but ResNet-20 1.015-1.04x at 2 threads), the conv by channel blocks with their means from 2^13 "
    "outputs (0.97x, ResNet-20 1.02x), 1x1 convs split by bands of rows where their tasks split channel "
    "blocks (no change), avx512vnni parallel_shift 1 or 5 instead of 3 (no consistent change; the machine "
    "was in a slow phase), kTaskMeansPairs 8 or 32 instead of 4 (MobileNetV2 0.97-0.98x, ResNet-20 "
    "1.01-1.03x), the depthwise plane kernel's ReLU as one vmaxps (its 32x32 node 0.98x, the model "
    "0.996-1.0x). Two threads barely help MobileNetV2 here (ab.py: 0.97x its 1-thread time; ONNX "
    "Runtime int8 0.71x): perf per thread shows ONNX Runtime's worker idle (spinning) 27% of its time and the "
    "calling thread waiting 4%; the re-layout of the pointwise convs' input runs on the calling thread (4.2% "
    "of samples against 0.65% on the worker: too small to band); ~85 parallel sections per inference (conv, "
    "means, codes per layer). Per node (ONNX Runtime's profiler, 1 thread, MobileNetV2 (CIFAR)): the "
    "depthwise nodes 828 us against int8's 449, the stride-2 32x32 -> 16x16 one 71 us against 24 (its "
    "kernel alone 26 us by perf: about int8's whole node, before the means and the quantizer). Benchmark runs "
    "of 15:16 (after (1)-(2)) and 15:45 (after (3); the table), qexport / int8 at 1 thread: ResNet-20 "
    "0.85-1.00x then 0.88-0.95x, the CNN 1.10-1.14x then 0.99-1.10x, ResNet-18 1.19-1.23x then 1.15-1.21x, "
    "MobileNetV2 (CIFAR) 1.36-1.59x then 1.40-1.48x, MobileNetV2@224 1.33-1.43x then 1.34-1.42x; at 2 "
    "threads (15:45) ResNet-20 0.93-1.14x, the CNN 0.90-1.19x, ResNet-18 1.18-1.20x, MobileNetV2 (CIFAR) "
    "1.39-1.55x, @224 1.31-1.51x: session 21's within this machine's run-to-run spread, which exceeds the "
    "few percent gained (ab.py is what shows them). Why issue 16's targets (0.6x "
    "int8) are out of reach on this hardware, as a cost model: (a) dot products: int8 (MLAS) and qexport both "
    "run vpdpbusd, 64 multiply-adds per instruction, MLAS at 83-95% of its peak and qexport at ~99%, so "
    "the most qexport can gain there is 5-17%; 3-4-bit codes cannot be packed more densely into that "
    "instruction (two codes per byte would mix their products in the 32-bit sums); (b) per value, the ASQ "
    "definition (docs/ops.md) needs a float32 output, its float64 plane means in a fixed order and a "
    "division-exact quantizer, which int8's in-register requantization does not: 22% of MobileNetV2 "
    "(CIFAR)'s time (quantizer 10-11%, means 9-10%, adapter 3%; perf); so on MobileNetV2 the floor is about "
    "(0.83-0.95) + 0.2-0.3 of int8's time, and on ResNet-18 (dense 3x3 convs, less per-value work per "
    "multiply-add) about 0.9-1.0x; 0.6x would need a definition whose statistics and quantizer run in "
    "the conv's registers (a new op version), or hardware where int8 lacks a dot-product instruction.",
    "* Timing: every session stops its worker threads' spinning when a run returns "
    "(`session.force_spinning_stop`). Without it, with 2 threads, the idle workers of the sessions timed just "
    "before kept spinning on both cores and every model ran at 1-thread speed or worse (float 15.4 ms instead "
    "of 7.4 ms on ResNet-20 at batch 32).",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", default=None, help=f"default {X86_NETWORKS}; with --arm-icount {ARM_NETWORKS}")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="ResNet-20 only, 6 rounds, no memory probes")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-wait", action="store_true", help="measure without waiting for a quiet machine")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qexport" / "bench")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "performance.md")
    ap.add_argument("--arm-icount", action="store_true",
                    help="only the ARM instruction counts under qemu (added to the existing performance.json)")
    ap.add_argument("--render", action="store_true",
                    help="measure nothing: rewrite the document from the existing performance.json (after editing "
                         "the notes in this file)")
    args = ap.parse_args()
    if args.render:
        results = args.out / "performance.json"
        if not results.is_file():
            ap.error(f"{results} does not exist: nothing to render")
        write_markdown(args.doc, json.loads(results.read_text()))
        say(f"wrote {args.doc} from {results}")
        return 0
    networks = args.networks or (ARM_NETWORKS if args.arm_icount else X86_NETWORKS)
    nets = ["resnet20"] if args.quick else [n.strip() for n in networks.split(",") if n.strip()]
    rounds = 6 if args.quick else args.rounds
    memory = not (args.no_memory or args.quick)
    for n in nets:
        if n not in NETWORKS:
            ap.error(f"unknown network {n}; choose from {', '.join(NETWORKS)}")

    if args.arm_icount:
        return arm_main(args, nets)

    import onnxruntime as ort

    import qexport.runtime as rt

    paths, macs = {}, {}
    for net in nets:
        paths[net] = model_paths(net, args.out, args.cache)
        macs[net] = build(net, paths[net], args.rebuild)
    quiet_info = {"load_at_start": load_average(), "waited_s": 0, "quiet": load_average() < 0.7}
    if not args.no_wait:
        quiet_info = wait_quiet()
    say(f"measuring (load average {quiet_info['load_at_start']:.2f})")
    peaks = measure_peaks()
    records = []
    for net in nets:
        records += measure(net, paths[net], macs[net], rounds, memory)
    profile = profiles(paths["resnet20"], NETWORKS["resnet20"]["shape"]) if "resnet20" in nets else {}
    kind_profile = kind_profiles(nets, paths)
    result = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python", "benchmarks/bench.py"] + sys.argv[1:]),
        "environment": {"cpu": cpu_info(), "onnxruntime": ort.__version__, "kernel_isa": rt.kernel_isas()[-1],
                        "kernel_isas": rt.kernel_isas(), "quiet": quiet_info,
                        "load_at_end": round(load_average(), 2)},
        "targets": TARGETS,
        "peaks": peaks,
        "records": records,
        "profile": profile,
        "kind_profile": kind_profile,
        "models": {net: {k: str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for k, p in ps.items()}
                   for net, ps in paths.items()},
    }
    old = args.out / "performance.json"
    if old.is_file():  # measured by --arm-icount and convert_scale.py alone: keep them
        previous = json.loads(old.read_text())
        for key in ("arm_icount", "convert_scale"):
            if previous.get(key):
                result[key] = previous[key]
        if "other_machines" not in previous:  # a run from before the archive existed
            archive_machine(args.out, previous)
    if not args.quick and args.networks is None:  # the full run is this kind of machine's record
        archive_machine(args.out, result)
    result["other_machines"] = other_machines(args.out, result)
    write_results(args.out, args.doc, result)
    return 0


# --------------------------------------------------------------------------- other machines
# The last full run on each kind of machine (by qexport's kernel path: amx, avx512vnni, avx2, ...)
# is kept in benchmarks/results/machines/<path>.json; docs/performance.md summarizes the others,
# since CI and users' machines differ (an AVX2-only CPU has neither VNNI nor AMX).
def archive_machine(out: Path, result: dict) -> None:
    folder = out / "machines"
    folder.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in result.items() if k not in ("other_machines", "arm_icount", "convert_scale")}
    atomic_write_text(folder / f"{result['environment']['kernel_isa']}.json", json.dumps(record, indent=2) + "\n")


def other_machines(out: Path, result: dict) -> list[dict]:
    """Per archived machine other than this run's kernel path: its date, CPU and, per network and
    thread count, the range of qexport / int8 and qexport / float over its cells."""
    summaries = []
    for path in sorted((out / "machines").glob("*.json")):
        other = json.loads(path.read_text())
        env = other["environment"]
        if env["kernel_isa"] == result["environment"]["kernel_isa"]:
            continue
        rows = {}
        for r in other["records"]:
            rows.setdefault((r["network"], r["threads"]), []).append(r)
        summaries.append({
            "date": other["date"], "cpu": env["cpu"].get("model", "?"), "kernel_isa": env["kernel_isa"],
            "file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
            "rows": [{"network": net, "threads": t, "cells": len(rs),
                      "vs_int8": [min(r["qexport_vs_int8"] for r in rs), max(r["qexport_vs_int8"] for r in rs)],
                      "vs_float": [min(r["qexport_vs_float"] for r in rs), max(r["qexport_vs_float"] for r in rs)],
                      "met": sum(r["qexport_vs_int8"] <= TARGETS_EVERY["vs_int8"]
                                 and r["qexport_vs_float"] <= TARGETS_EVERY["vs_float"] for r in rs)}
                     for (net, t), rs in rows.items()]})
    return summaries


def write_results(out: Path, doc: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "performance.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "performance.json")
    write_markdown(doc, result)
    say(f"wrote {out / 'performance.json'} and {doc}")


def arm_main(args, nets: list[str]) -> int:
    """--arm-icount: the ARM instruction counts, stored into the existing performance.json (whose
    x86 records are kept as they are) and docs/performance.md rewritten from it."""
    import arm_icount

    results = args.out / "performance.json"
    if not results.is_file():
        say(f"{results} does not exist: run the x86 benchmark first (the ARM counts are added to its results)")
        return 2
    result = json.loads(results.read_text())
    paths, macs, shapes = {}, {}, {}
    for net in nets:
        paths[net] = model_paths(net, args.out, args.cache)
        macs[net] = build(net, paths[net], args.rebuild)
        shapes[net] = NETWORKS[net]["shape"]
    arm = arm_icount.measure(paths, shapes, macs, cache=args.cache, say=say)
    arm["command"] = " ".join(["python", "benchmarks/bench.py"] + sys.argv[1:])
    if not any("mobilenet" in n for n in nets):
        arm["not_measured"] = ("MobileNetV2 (32x32), which issue 16 asks for: it is in the model zoo "
                               "(mobilenet_v2_cifar) but not yet among bench.py's networks; ResNet-20 and the "
                               "Fashion-MNIST CNN stand in.")
    result["arm_icount"] = arm
    write_results(args.out, args.doc, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
