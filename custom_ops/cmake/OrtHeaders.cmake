# Locate ONNX Runtime's C/C++ headers (ORT API >= 21; the library only uses API-21 functions).
#
# Order:
#   1. the CMake variable ORT_INCLUDE_DIR, else the environment variable ORT_INCLUDE_DIR
#      (a folder holding onnxruntime_c_api.h, or its parent `include/`, or a prefix with
#      include/ or include/onnxruntime/ below it);
#   2. the system: find_path(onnxruntime_c_api.h) under include/ and include/onnxruntime/
#      (distribution packages such as libonnxruntime-dev; honours CMAKE_PREFIX_PATH and a
#      toolchain file's CMAKE_FIND_ROOT_PATH);
#   3. custom_ops/cmake/fetch_ort_headers.sh into
#      ${XDG_CACHE_HOME:-$HOME/.cache}/qexport/ort-headers-api21 (skipped when the option
#      QEXPORT_FETCH_ORT_HEADERS is OFF);
# else a fatal error naming the three options.
#
# Sets QEXPORT_ORT_INCLUDE_DIR (the folder holding onnxruntime_c_api.h) and
# QEXPORT_ORT_API_VERSION in the caller's scope.

set(QEXPORT_ORT_MIN_API 21)

# Reads ORT_API_VERSION from <dir>/onnxruntime_c_api.h into <out> (empty if not found).
function(_qexport_ort_api_version dir out)
  set(_v "")
  if(EXISTS "${dir}/onnxruntime_c_api.h")
    file(STRINGS "${dir}/onnxruntime_c_api.h" _line REGEX "^#define ORT_API_VERSION [0-9]+")
    if(_line)
      string(REGEX REPLACE "^#define ORT_API_VERSION ([0-9]+).*$" "\\1" _v "${_line}")
    endif()
  endif()
  set(${out} "${_v}" PARENT_SCOPE)
endfunction()

# Returns in <out> the folder holding onnxruntime_c_api.h below <base>, or "".
function(_qexport_ort_header_dir base out)
  set(_found "")
  foreach(_cand "${base}" "${base}/onnxruntime" "${base}/include" "${base}/include/onnxruntime"
                "${base}/onnxruntime/core/session")
    if(EXISTS "${_cand}/onnxruntime_c_api.h")
      set(_found "${_cand}")
      break()
    endif()
  endforeach()
  set(${out} "${_found}" PARENT_SCOPE)
endfunction()

function(qexport_find_ort_headers)
  set(_how_to_fix
    "Give the build ONNX Runtime's C/C++ headers (ORT API >= ${QEXPORT_ORT_MIN_API}, e.g. 1.21) in one of three ways:\n"
    "  1. set ORT_INCLUDE_DIR (CMake variable -DORT_INCLUDE_DIR=... or environment variable) to a folder holding onnxruntime_c_api.h, e.g. the include/ folder of an ONNX Runtime release archive;\n"
    "  2. install your distribution's ONNX Runtime development package (Debian/Ubuntu: libonnxruntime-dev) so that onnxruntime_c_api.h is found under include/ or include/onnxruntime/;\n"
    "  3. let custom_ops/cmake/fetch_ort_headers.sh fetch Debian's libonnxruntime-dev into $XDG_CACHE_HOME (default ~/.cache)/qexport/ort-headers-api21 (needs apt-get, dpkg and a Debian package mirror, and the CMake option QEXPORT_FETCH_ORT_HEADERS=ON).")
  string(JOIN "" _how_to_fix ${_how_to_fix})
  set(_fetch_note "")

  # 1. Explicit location.
  set(_explicit "${ORT_INCLUDE_DIR}")
  set(_explicit_from "CMake variable ORT_INCLUDE_DIR")
  if(NOT _explicit AND DEFINED ENV{ORT_INCLUDE_DIR} AND NOT "$ENV{ORT_INCLUDE_DIR}" STREQUAL "")
    set(_explicit "$ENV{ORT_INCLUDE_DIR}")
    set(_explicit_from "environment variable ORT_INCLUDE_DIR")
  endif()
  if(_explicit)
    _qexport_ort_header_dir("${_explicit}" _dir)
    if(NOT _dir)
      message(FATAL_ERROR "qexport: ${_explicit_from}='${_explicit}' holds no onnxruntime_c_api.h.\n${_how_to_fix}")
    endif()
    _qexport_ort_api_version("${_dir}" _ver)
    if(NOT _ver OR _ver LESS QEXPORT_ORT_MIN_API)
      message(FATAL_ERROR "qexport: ${_dir}/onnxruntime_c_api.h defines ORT_API_VERSION '${_ver}', need >= ${QEXPORT_ORT_MIN_API}.\n${_how_to_fix}")
    endif()
    set(_source "${_explicit_from}")
  endif()

  # 2. The system.
  if(NOT _dir)
    find_path(QEXPORT_ORT_SYSTEM_INCLUDE_DIR onnxruntime_c_api.h
      PATH_SUFFIXES onnxruntime include/onnxruntime
      DOC "Folder holding the system's onnxruntime_c_api.h")
    if(QEXPORT_ORT_SYSTEM_INCLUDE_DIR)
      _qexport_ort_api_version("${QEXPORT_ORT_SYSTEM_INCLUDE_DIR}" _ver)
      if(_ver AND NOT _ver LESS QEXPORT_ORT_MIN_API)
        set(_dir "${QEXPORT_ORT_SYSTEM_INCLUDE_DIR}")
        set(_source "system")
      else()
        message(STATUS "qexport: ignoring ${QEXPORT_ORT_SYSTEM_INCLUDE_DIR}/onnxruntime_c_api.h (ORT_API_VERSION '${_ver}' < ${QEXPORT_ORT_MIN_API})")
      endif()
    endif()
  endif()

  # 3. Fetch into the user's cache.
  if(NOT _dir AND QEXPORT_FETCH_ORT_HEADERS)
    if(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
      set(_cache "$ENV{XDG_CACHE_HOME}")
    elseif(DEFINED ENV{HOME} AND NOT "$ENV{HOME}" STREQUAL "")
      set(_cache "$ENV{HOME}/.cache")
    else()
      set(_cache "${CMAKE_BINARY_DIR}/cache")
    endif()
    set(_dest "${_cache}/qexport/ort-headers-api${QEXPORT_ORT_MIN_API}")
    find_program(QEXPORT_BASH bash)
    if(QEXPORT_BASH)
      message(STATUS "qexport: fetching ONNX Runtime headers into ${_dest}")
      execute_process(
        COMMAND "${QEXPORT_BASH}" "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/fetch_ort_headers.sh" "${_dest}"
        RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err
        OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_STRIP_TRAILING_WHITESPACE)
      if(_rc EQUAL 0)
        _qexport_ort_header_dir("${_dest}/include" _dir)
        if(_dir)
          _qexport_ort_api_version("${_dir}" _ver)
          if(NOT _ver OR _ver LESS QEXPORT_ORT_MIN_API)
            message(FATAL_ERROR "qexport: fetched headers in ${_dir} define ORT_API_VERSION '${_ver}', need >= ${QEXPORT_ORT_MIN_API}.\n${_how_to_fix}")
          endif()
          set(_source "fetched into ${_dest}")
        endif()
      else()
        set(_fetch_note "\nfetch_ort_headers.sh failed (exit ${_rc}): ${_err}")
      endif()
    else()
      set(_fetch_note "\nfetch_ort_headers.sh needs bash, which was not found.")
    endif()
  elseif(NOT _dir)
    set(_fetch_note "\nFetching is disabled (QEXPORT_FETCH_ORT_HEADERS=OFF).")
  endif()

  if(NOT _dir)
    message(FATAL_ERROR "qexport: ONNX Runtime headers (onnxruntime_c_api.h) not found.\n${_how_to_fix}${_fetch_note}")
  endif()
  _qexport_ort_api_version("${_dir}" _ver)
  message(STATUS "qexport: ONNX Runtime headers: ${_dir} (ORT_API_VERSION ${_ver}, ${_source})")
  set(QEXPORT_ORT_INCLUDE_DIR "${_dir}" PARENT_SCOPE)
  set(QEXPORT_ORT_API_VERSION "${_ver}" PARENT_SCOPE)
endfunction()
