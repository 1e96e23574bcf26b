#!/usr/bin/env bash
# The kernel tests and the fuzz test against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of the op library. Any memory error or undefined behaviour aborts the process (the
# library is built with -fno-sanitize-recover), which fails this script.
# Usage: .ci/sanitize.sh [fuzz cases, default 3000]   (inside the environment .ci/run made)
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-3000}
build=build/sanitize
cmake -S custom_ops -B "$build" -G Ninja -DQEXPORT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build "$build" >/dev/null
lib=$(find "$build" -name 'libqexport_ops.so' | head -n 1)
echo "sanitized library: $lib"
# Python itself is not instrumented: preload the runtimes; leaks are Python's, not checked here.
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export QEXPORT_OPS_LIBRARY="$lib" QEXPORT_FUZZ_CASES="$cases" OMP_NUM_THREADS=1
python -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py tests/kernels/test_kernel_errors.py tests/kernels/test_fuzz.py
