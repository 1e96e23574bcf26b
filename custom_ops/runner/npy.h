// Minimal reader/writer for NumPy .npy files (format versions 1.0, 2.0, 3.0).
//
// Supported: C-order (fortran_order False), little-endian or byte-sized data of the dtypes
// float16/32/64, int8/16/32/64, uint8/16/32/64 and bool. Anything else is refused with a
// message that says what to change on the NumPy side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qexport_run {

// One dtype: NumPy's descr ("<f4"), its short name ("float32"), its size in bytes, and the
// ONNX TensorProto element type (same numbering as ONNXTensorElementDataType).
struct DType {
  const char* descr;
  const char* name;
  size_t size;
  int onnx_type;
};

// nullptr when unknown.
const DType* dtype_from_onnx(int onnx_type);
// The NumPy-style name of an ONNX element type ("float32", "uint8", ... or "type <n>").
std::string onnx_type_name(int onnx_type);

struct NpyArray {
  const DType* dtype = nullptr;
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;  // size = product(shape) * dtype->size

  size_t count() const;
};

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Reads `path`. Throws NpyError naming the file and the problem.
NpyArray read_npy(const std::string& path);
// Writes a C-order little-endian .npy (format 1.0). Throws NpyError on I/O failure.
void write_npy(const std::string& path, const DType& dtype, const std::vector<int64_t>& shape,
               const void* data, size_t nbytes);

// "(512, 1, 28, 28)"; NumPy's tuple style, "(3,)" for rank 1.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace qexport_run
