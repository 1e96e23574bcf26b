# CMake toolchain file: cross-compile libqexport_ops (and the qexport-run runner) for 64-bit ARM
# Linux (aarch64) with Debian's/Ubuntu's GNU cross toolchain.
#
#   apt-get install g++-aarch64-linux-gnu
#   cmake -S custom_ops -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=custom_ops/toolchains/aarch64-linux-gnu.cmake \
#         -DQEXPORT_BUILD_RUNNER=ON && cmake --build build/aarch64
#
# (`qexport build-ops --target aarch64 -o dist/` does exactly this and collects the files.)
# Another toolchain prefix (e.g. a vendor SDK): -DQEXPORT_CROSS_PREFIX=/opt/sdk/bin/aarch64-linux-gnu-
# The target is generic ARMv8-A: the kernels pick NEON / dotprod paths at run time, so one
# binary serves Cortex-A53 boards and dotprod-capable cores alike.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(QEXPORT_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the aarch64 cross tools (gcc, g++)")

find_program(QEXPORT_CROSS_CXX NAMES "${QEXPORT_CROSS_PREFIX}g++")
find_program(QEXPORT_CROSS_CC NAMES "${QEXPORT_CROSS_PREFIX}gcc")
if(NOT QEXPORT_CROSS_CXX)
  message(FATAL_ERROR
    "qexport: the aarch64 cross compiler ${QEXPORT_CROSS_PREFIX}g++ was not found. "
    "On Debian/Ubuntu install it with:  apt-get install g++-aarch64-linux-gnu  "
    "(or set QEXPORT_CROSS_PREFIX to another toolchain's prefix).")
endif()
if(QEXPORT_CROSS_CC)  # the projects are C++ only; a C compiler is used when present
  set(CMAKE_C_COMPILER "${QEXPORT_CROSS_CC}")
endif()
set(CMAKE_CXX_COMPILER "${QEXPORT_CROSS_CXX}")

# Debian's multiarch cross sysroot (libc6-dev-arm64-cross).
if(NOT DEFINED QEXPORT_CROSS_SYSROOT)
  set(QEXPORT_CROSS_SYSROOT "/usr/aarch64-linux-gnu")
endif()
set(CMAKE_FIND_ROOT_PATH "${QEXPORT_CROSS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)   # build tools run on the host
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)    # libraries come from the target
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)    # headers: ONNX Runtime's are architecture-independent
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
