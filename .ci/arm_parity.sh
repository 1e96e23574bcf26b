#!/usr/bin/env bash
# CI: ARM parity. Cross-build the aarch64 op library + qexport-run, convert the shipped float
# sample model at 3 and 4 bits, and check on the 512 shipped samples, under qemu-aarch64 with
# -cpu cortex-a76 (NEON + dotprod) and -cpu cortex-a53 (NEON only), that the runner computes what
# PyTorch computed: 0 activation-code mismatches in every quantized layer, 100% top-1 agreement.
# The 3-bit model runs with 1 intra-op thread, the 4-bit one with 2, so both the single- and the
# multi-threaded kernel paths are checked on both CPUs.
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
done
echo "== ARM parity: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $((SECONDS - start)) s"
exit $status
