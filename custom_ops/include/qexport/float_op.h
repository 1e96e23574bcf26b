// The op object of an ai.qexport op with one float32 input and one float32 output
// (GlobalAvgPool, Sigmoid, Silu): Derived::make(info) creates its kernel.
#pragma once

#include "qexport/common.h"
#include "qexport/ort.h"

namespace qexport {

template <typename Derived, typename Kernel>
struct FloatOp : Ort::CustomOpBase<Derived, Kernel, /*WithStatus=*/true> {
  explicit FloatOp(const char* name) : name_(name) {}

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    *kernel = nullptr;
    return guarded(name_, node_name(info), [&] { *kernel = static_cast<const Derived*>(this)->make(info); });
  }

  const char* GetName() const { return name_; }
  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 protected:
  const char* name_;
};

}  // namespace qexport
