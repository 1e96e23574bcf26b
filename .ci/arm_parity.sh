#!/usr/bin/env bash
# CI: ARM parity. Cross-build the aarch64 op library + qexport-run, convert the shipped float
# sample model at 3 and 4 bits, and check on the 512 shipped samples, under qemu-aarch64 with
# -cpu cortex-a76 (NEON + dotprod) and -cpu cortex-a53 (NEON only), that the runner computes what
# PyTorch computed: 0 activation-code mismatches in every quantized layer, 100% top-1 agreement.
# The 3-bit model runs with 1 intra-op thread, the 4-bit one with 2, so both the single- and the
# multi-threaded kernel paths are checked on both CPUs. Then each model runs once more per CPU with
# QEXPORT_KERNEL_TRACE=1, and every node must report the path that CPU selects (cortex-a76:
# dotprod, cortex-a53: neon), or, for a part that path has no kernel of its own for (neon: gemm),
# the portable code with reason=not_in_path (docs/ops.md, "Kernel paths").
#
# Expects `qexport` installed in the active Python environment (as .ci/run leaves it); installs
# the apt packages it needs; qemu-user >= 10 and the aarch64 ONNX Runtime are fetched into
# ${XDG_CACHE_HOME:-~/.cache}/qexport/. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS

echo "== ARM parity: apt packages"
need=()
for pkg in g++-aarch64-linux-gnu file cmake make; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v qexport >/dev/null || { echo "qexport is not installed in this environment (run .ci/run, or pip install .)"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== ARM parity: qexport build-ops --target aarch64"
t=$SECONDS
qexport build-ops --target aarch64 -o "$work/dist"
file -L "$work"/dist/*
for f in qexport-run libqexport_ops.so libonnxruntime.so.1; do
  file -L "$work/dist/$f" | grep -q "ARM aarch64" || { echo "$f is not an aarch64 file"; exit 1; }
done
echo "build-ops: $((SECONDS - t)) s"

# check_paths MODEL THREADS: the kernel path of every node on both emulated CPUs (see above).
check_paths() {
  python - "$1" "$work/dist" "$2" <<'EOF'
import os
import sys

import numpy as np
import onnx

from qexport.deploy import RunnerSession, dist_files, fetch_qemu
from qexport.runtime import KERNEL_TRACE_ENV, parse_kernel_trace

model, dist, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ[KERNEL_TRACE_ENV] = "1"
runner, ops, ort = dist_files(dist, "aarch64")
nodes = {n.name: n.op_type for n in onnx.load(model).graph.node if n.domain == "ai.qexport"}
x = np.load("samples/fashion_mnist_512.npz")["x"][:8]
# per CPU: the path it selects, and the ops whose kernels have that path's own code (the others
# run the portable code: neon has no gemm)
cpus = {"cortex-a76": ("dotprod", ("Conv", "ConvFused", "Gemm", "Quantize", "Pool")),
        "cortex-a53": ("neon", ("Conv", "ConvFused", "Quantize", "Pool"))}
ok = True
for cpu, (path, own) in cpus.items():
    with RunnerSession(model, runner=runner, ops=ops, ort=ort, qemu=fetch_qemu(), cpu=cpu, threads=threads) as s:
        s.run(None, {s.get_inputs()[0].name: x})
        lines = parse_kernel_trace(s.last_stderr)
    counts = {}
    for node, op in sorted(nodes.items()):
        got = [line for line in lines if line.node == node]
        want = (path, None) if op.endswith(own) else ("scalar", "not_in_path")
        if len(got) != 1 or (got[0].op, got[0].selected, got[0].path, got[0].reason) != (op, path, *want):
            ok = False
            print(f"{cpu} {node} ({op}): expected path={want[0]} selected={path} reason={want[1]}, got {got}")
        counts[want[0]] = counts.get(want[0], 0) + 1
    print(f"{cpu}: the {len(nodes)} nodes ran the expected paths: "
          + ", ".join(f"{n} {p}" for p, n in sorted(counts.items())))
sys.exit(0 if ok and nodes else 1)
EOF
}

status=0
for spec in "3 1" "4 2"; do
  read -r bits threads <<<"$spec"
  echo "== ARM parity: ${bits}-bit ASQ+POST, ${threads} thread(s)"
  t=$SECONDS
  # x86 parity is the test suite's job; here the ARM check below compares with PyTorch.
  qexport convert samples/small_cnn_float.pt --bits "$bits" --method asq+post --no-validate -o "$work/w$bits.onnx"
  echo "convert: $((SECONDS - t)) s"
  t=$SECONDS
  if ! qexport validate "$work/w$bits.pt" "$work/w$bits.onnx" --target aarch64 --cpu cortex-a76,cortex-a53 \
      --threads "$threads" --dist "$work/dist" --report "$work/w$bits.aarch64.json"; then
    status=1
  fi
  echo "aarch64 validate (2 emulated CPUs, 512 samples): $((SECONDS - t)) s"
  echo "== ARM parity: ${bits}-bit kernel paths (QEXPORT_KERNEL_TRACE=1)"
  check_paths "$work/w$bits.onnx" "$threads" || status=1
done
echo "== ARM parity: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $((SECONDS - start)) s"
exit $status
