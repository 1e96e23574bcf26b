// ONNX Runtime's C++ API, set up for a custom-op library that does not link libonnxruntime:
// the API table is installed by RegisterCustomOps (Ort::InitApi), see src/register.cc.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include <onnxruntime_cxx_api.h>

#if !defined(ORT_API_VERSION) || ORT_API_VERSION < 21
#error "qexport needs ONNX Runtime headers with ORT_API_VERSION >= 21"
#endif

#define QEXPORT_EXPORT __attribute__((visibility("default")))
