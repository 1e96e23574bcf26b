// Shared plumbing of the ai.qexport kernels: errors, attributes, tensors, parallel loops.
//
// Error rule: every failure is an exception of type OpError (or anything else) thrown inside a
// kernel, caught by guarded() and returned to ONNX Runtime as an OrtStatus whose message starts
// with the op name. No exception crosses the C ABI.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "qexport/ort.h"

namespace qexport {

// An error with an ORT error code; what() is the complete message ("<Op>: <problem>").
class OpError : public std::runtime_error {
 public:
  OpError(OrtErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  OrtErrorCode code() const noexcept { return code_; }

 private:
  OrtErrorCode code_;
};

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}

// Bad input or attribute: ORT_INVALID_ARGUMENT "<op>: <args...>".
template <typename... Args>
[[noreturn]] void invalid(const char* op, const Args&... args) {
  throw OpError(ORT_INVALID_ARGUMENT, cat(op, ": ", args...));
}

// Anything else: ORT_FAIL "<op>: <args...>".
template <typename... Args>
[[noreturn]] void failure(const char* op, const Args&... args) {
  throw OpError(ORT_FAIL, cat(op, ": ", args...));
}

// Creates an OrtStatus (never throws; nullptr only if ORT cannot allocate one).
OrtStatusPtr make_status(OrtErrorCode code, const std::string& message) noexcept;

// Converts the exception being handled (call only inside a catch block) into an OrtStatus.
OrtStatusPtr status_from_exception(const char* op, const std::string& node) noexcept;

// Runs f(); returns nullptr on success, else an OrtStatus describing the exception.
template <typename F>
OrtStatusPtr guarded(const char* op, const std::string& node, F&& f) noexcept {
  try {
    f();
    return nullptr;
  } catch (...) {
    return status_from_exception(op, node);
  }
}

// The node's name ("" if ORT does not know it); never throws.
std::string node_name(const OrtKernelInfo* info) noexcept;

// Attribute access with the op's error messages. A required attribute that is missing, or any
// attribute of the wrong type, is an ORT_INVALID_ARGUMENT error naming it.
class Attributes {
 public:
  Attributes(const OrtKernelInfo* info, const char* op) : info_(info), op_(op) {}
  int64_t get_int(const char* name) const;
  int64_t get_int(const char* name, int64_t default_value) const;
  float get_float(const char* name) const;
  std::vector<int64_t> get_ints(const char* name) const;
  std::vector<int64_t> get_ints(const char* name, const std::vector<int64_t>& default_value) const;
  std::string get_string(const char* name, const std::string& default_value) const;

 private:
  bool try_int(const char* name, int64_t* value) const;
  bool try_ints(const char* name, std::vector<int64_t>* value) const;
  bool present(const char* name) const;  // under any attribute type
  [[noreturn]] void missing_or_mistyped(const char* name, const char* type) const;

  const OrtKernelInfo* info_;
  const char* op_;
};

// "(2, 3, 4)" / "[1, 2]".
std::string shape_str(const std::vector<int64_t>& shape);
std::string list_str(const std::vector<int64_t>& values);

// a * b, or an ORT_INVALID_ARGUMENT "<op>: <what> is too large" when it overflows int64.
int64_t checked_mul(const char* op, int64_t a, int64_t b, const char* what);

// A constant initializer input at kernel creation (nullptr data if the input is not constant).
struct ConstantInput {
  bool is_constant = false;
  const void* data = nullptr;
  std::vector<int64_t> shape;
  size_t count = 0;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};
ConstantInput constant_input(const OrtKernelInfo* info, size_t index);

// An input tensor at Compute time.
struct Input {
  const void* data = nullptr;
  std::vector<int64_t> shape;
  size_t count = 0;
};
// Reads input `index` and checks its element type (ORT checks it at session creation already).
Input get_input(const char* op, Ort::KernelContext& ctx, size_t index, const char* name,
                ONNXTensorElementDataType type);

// An input at Compute time read without any allocation on this library's side (the hot path of
// the weighted ops): data, element count and dimensions.
struct InputView {
  static constexpr size_t kMaxRank = 8;
  bool present = false;  // false: an optional input the node does not give
  const void* data = nullptr;
  size_t count = 0;
  size_t rank = 0;
  int64_t dims[kMaxRank] = {};
  std::vector<int64_t> big;  // the dimensions when rank > kMaxRank (rare)

  int64_t dim(size_t i) const { return rank > kMaxRank ? big[i] : dims[i]; }
  std::vector<int64_t> shape() const;  // for messages
};
// Input `index` (element type checked, ORT_INVALID_ARGUMENT naming it otherwise); a missing
// input is an error unless `optional` (then present = false).
InputView input_view(const char* op, const OrtKernelContext* ctx, size_t index, const char* name,
                     ONNXTensorElementDataType type, bool optional = false);

// Output `index` allocated with `shape`, or nullptr when the node does not use that (optional)
// output.
void* optional_output(OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& shape);
void* optional_output(OrtKernelContext* ctx, size_t index, const int64_t* dims, size_t rank);

// Input `index` (its data and shape), or nullptr when the node does not give that optional input;
// a wrong element type is an ORT_INVALID_ARGUMENT error naming it.
const void* optional_input(const char* op, const OrtKernelContext* ctx, size_t index, const char* name,
                           ONNXTensorElementDataType type, std::vector<int64_t>* shape);

// Calls fn(i) for i in [0, total) on ONNX Runtime's intra-op thread pool (sequentially when the
// session has none). Exceptions thrown by fn are caught in the worker and the first one is
// rethrown here after every task has finished.
void parallel_for(Ort::KernelContext& ctx, size_t total, const std::function<void(size_t)>& fn);

// A growable scratch buffer (one per thread, as thread_local) whose storage starts on a 64-byte
// boundary, the width of a cache line and of an AVX-512 / AMX row load: with malloc's 16-byte
// alignment, where the buffer landed decided how many vector loads split across two lines, so
// a model's speed changed from one process to the next.
template <typename T>
class Scratch {
 public:
  T* get(size_t count) {
    const size_t bytes = count * sizeof(T) + 64;
    if (raw_.size() < bytes) raw_.resize(bytes);
    const auto addr = reinterpret_cast<uintptr_t>(raw_.data());
    return reinterpret_cast<T*>(raw_.data() + ((64 - addr % 64) % 64));
  }

 private:
  std::vector<unsigned char> raw_;
};

}  // namespace qexport
