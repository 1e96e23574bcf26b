#include "npy.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace qexport_run {
namespace {

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE float32/float64 expected");

// ONNX TensorProto element types (= ONNXTensorElementDataType).
constexpr DType kTypes[] = {
    {"<f4", "float32", 4, 1},  {"|u1", "uint8", 1, 2},    {"|i1", "int8", 1, 3},
    {"<u2", "uint16", 2, 4},   {"<i2", "int16", 2, 5},    {"<i4", "int32", 4, 6},
    {"<i8", "int64", 8, 7},    {"|b1", "bool", 1, 9},     {"<f2", "float16", 2, 10},
    {"<f8", "float64", 8, 11}, {"<u4", "uint32", 4, 12},  {"<u8", "uint64", 8, 13},
};

bool host_is_little_endian() {
  const uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw NpyError(path + ": " + what);
}

// The value after 'key': in a NumPy header dict, with leading spaces skipped; npos if absent.
size_t find_value(const std::string& header, const char* key) {
  for (const char q : {'\'', '"'}) {
    const std::string k = std::string(1, q) + key + std::string(1, q);
    size_t p = header.find(k);
    if (p == std::string::npos) continue;
    p = header.find(':', p + k.size());
    if (p == std::string::npos) return p;
    ++p;
    while (p < header.size() && std::isspace(static_cast<unsigned char>(header[p]))) ++p;
    return p;
  }
  return std::string::npos;
}

const DType* parse_descr(const std::string& path, const std::string& header) {
  const size_t p = find_value(header, "descr");
  if (p == std::string::npos || p >= header.size()) fail(path, "not a valid .npy header (no 'descr')");
  const char q = header[p];
  if (q != '\'' && q != '"') {
    fail(path, "structured or record dtypes are not supported; save a plain array (np.save(path, x))");
  }
  const size_t end = header.find(q, p + 1);
  if (end == std::string::npos) fail(path, "not a valid .npy header (unterminated 'descr')");
  std::string descr = header.substr(p + 1, end - p - 1);
  if (descr.size() < 2) fail(path, "unsupported dtype '" + descr + "'");
  char order = descr[0];
  const std::string kind = descr.substr(1);
  if (order == '=') order = host_is_little_endian() ? '<' : '>';
  for (const DType& t : kTypes) {
    if (kind != t.descr + 1) continue;
    if (t.size > 1 && order != '<') {
      fail(path, std::string("big-endian ") + t.name + " data is not supported; save it little-endian "
                 "(x.astype('<" + (t.descr + 1) + "'))");
    }
    if (t.size == 1 && order != '|' && order != '<' && order != '>') break;
    return &t;
  }
  fail(path, "unsupported dtype '" + descr +
                 "'; supported: float16, float32, float64, int8, int16, int32, int64, uint8, uint16, "
                 "uint32, uint64, bool");
}

bool parse_fortran(const std::string& path, const std::string& header) {
  const size_t p = find_value(header, "fortran_order");
  if (p == std::string::npos) fail(path, "not a valid .npy header (no 'fortran_order')");
  if (header.compare(p, 4, "True") == 0) return true;
  if (header.compare(p, 5, "False") == 0) return false;
  fail(path, "not a valid .npy header (bad 'fortran_order')");
}

std::vector<int64_t> parse_shape(const std::string& path, const std::string& header) {
  const size_t p = find_value(header, "shape");
  if (p == std::string::npos || p >= header.size() || header[p] != '(') {
    fail(path, "not a valid .npy header (no 'shape' tuple)");
  }
  const size_t end = header.find(')', p);
  if (end == std::string::npos) fail(path, "not a valid .npy header (unterminated 'shape')");
  std::vector<int64_t> shape;
  std::string item;
  std::istringstream in(header.substr(p + 1, end - p - 1));
  while (std::getline(in, item, ',')) {
    size_t a = 0, b = item.size();
    while (a < b && std::isspace(static_cast<unsigned char>(item[a]))) ++a;
    while (b > a && (std::isspace(static_cast<unsigned char>(item[b - 1])) || item[b - 1] == 'L')) --b;
    if (a == b) continue;  // "(3,)" -> trailing empty item
    int64_t v = 0;
    for (size_t i = a; i < b; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(item[i])) || v > (std::numeric_limits<int64_t>::max() - 9) / 10) {
        fail(path, "not a valid .npy header (bad dimension '" + item + "')");
      }
      v = v * 10 + (item[i] - '0');
    }
    shape.push_back(v);
  }
  return shape;
}

}  // namespace

const DType* dtype_from_onnx(int onnx_type) {
  for (const DType& t : kTypes) {
    if (t.onnx_type == onnx_type) return &t;
  }
  return nullptr;
}

std::string onnx_type_name(int onnx_type) {
  if (const DType* t = dtype_from_onnx(onnx_type)) return t->name;
  switch (onnx_type) {
    case 8: return "string";
    case 16: return "bfloat16";
    default: return "ONNX element type " + std::to_string(onnx_type);
  }
}

size_t NpyArray::count() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "cannot open the file (does it exist?)");
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    fail(path, "not a .npy file (save inputs with numpy.save)");
  }
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) fail(path, "truncated .npy header");
    header_len = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) fail(path, "truncated .npy header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    if (header_len > (1u << 24)) fail(path, "not a valid .npy header (header too long)");
  } else {
    fail(path, "unsupported .npy format version " + std::to_string(major));
  }
  std::string header(header_len, '\0');
  if (!f.read(&header[0], header_len)) fail(path, "truncated .npy header");

  NpyArray arr;
  arr.dtype = parse_descr(path, header);
  if (parse_fortran(path, header)) {
    fail(path, "Fortran-ordered arrays are not supported; save np.ascontiguousarray(x)");
  }
  arr.shape = parse_shape(path, header);
  size_t count = 1;
  for (int64_t d : arr.shape) {
    if (d != 0 && count > std::numeric_limits<size_t>::max() / arr.dtype->size / static_cast<size_t>(d)) {
      fail(path, "array too large");
    }
    count *= static_cast<size_t>(d);
  }
  const size_t nbytes = count * arr.dtype->size;
  const std::streampos data_start = f.tellg();
  f.seekg(0, std::ios::end);
  const std::streamoff available = f.tellg() - data_start;
  if (available < static_cast<std::streamoff>(nbytes)) {
    fail(path, "truncated: shape " + shape_str(arr.shape) + " of " + arr.dtype->name + " needs " +
                   std::to_string(nbytes) + " data bytes, the file has " + std::to_string(available));
  }
  f.seekg(data_start);
  arr.data.resize(nbytes);
  if (nbytes && !f.read(reinterpret_cast<char*>(arr.data.data()), static_cast<std::streamsize>(nbytes))) {
    fail(path, "read error");
  }
  return arr;
}

void write_npy(const std::string& path, const DType& dtype, const std::vector<int64_t>& shape, const void* data,
               size_t nbytes) {
  std::string dict = std::string("{'descr': '") + dtype.descr + "', 'fortran_order': False, 'shape': " +
                     shape_str(shape) + ", }";
  // Magic (6) + version (2) + length (2) + dict + padding + '\n', a multiple of 64.
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  if (dict.size() > 65535) throw NpyError(path + ": shape too long for a .npy 1.0 header");
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw NpyError(path + ": cannot create the file");
  const unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                  static_cast<unsigned char>(dict.size() & 0xff),
                                  static_cast<unsigned char>(dict.size() >> 8)};
  f.write(reinterpret_cast<const char*>(head), 10);
  f.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  if (nbytes) f.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  f.close();
  if (!f) throw NpyError(path + ": write error (disk full?)");
}

}  // namespace qexport_run
