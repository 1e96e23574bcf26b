// Shared plumbing of the ai.qexport kernels (see include/qexport/common.h).
#include "qexport/common.h"

#include <exception>
#include <mutex>
#include <new>

namespace qexport {

OrtStatusPtr make_status(OrtErrorCode code, const std::string& message) noexcept {
  return Ort::GetApi().CreateStatus(code, message.c_str());
}

OrtStatusPtr status_from_exception(const char* op, const std::string& node) noexcept {
  OrtErrorCode code = ORT_FAIL;
  std::string message;
  try {
    try {
      throw;
    } catch (const OpError& e) {
      code = e.code();
      message = e.what();
    } catch (const Ort::Exception& e) {
      code = e.GetOrtErrorCode();
      message = cat(op, ": ", e.what());
    } catch (const std::bad_alloc&) {
      message = cat(op, ": out of memory");
    } catch (const std::exception& e) {
      message = cat(op, ": ", e.what());
    } catch (...) {
      message = cat(op, ": unknown error");
    }
    if (!node.empty()) message += cat(" (node '", node, "')");
  } catch (...) {  // building the message itself failed (out of memory)
    return Ort::GetApi().CreateStatus(code, op);
  }
  return make_status(code, message);
}

std::string node_name(const OrtKernelInfo* info) noexcept {
  try {
    size_t size = 0;
    OrtStatus* st = Ort::GetApi().KernelInfo_GetNodeName(info, nullptr, &size);
    if (st != nullptr) {
      Ort::GetApi().ReleaseStatus(st);
      return {};
    }
    if (size <= 1) return {};
    std::string name(size, '\0');
    st = Ort::GetApi().KernelInfo_GetNodeName(info, name.data(), &size);
    if (st != nullptr) {
      Ort::GetApi().ReleaseStatus(st);
      return {};
    }
    name.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
    return name;
  } catch (...) {
    return {};
  }
}

// ------------------------------------------------------------------------------ attributes
namespace {
// true when the ORT call succeeded; releases the status otherwise.
bool ok(OrtStatus* st) noexcept {
  if (st == nullptr) return true;
  Ort::GetApi().ReleaseStatus(st);
  return false;
}
}  // namespace

bool Attributes::try_int(const char* name, int64_t* value) const {
  return ok(Ort::GetApi().KernelInfoGetAttribute_int64(info_, name, value));
}

bool Attributes::try_ints(const char* name, std::vector<int64_t>* value) const {
  size_t size = 0;
  if (!ok(Ort::GetApi().KernelInfoGetAttributeArray_int64(info_, name, nullptr, &size))) return false;
  value->assign(size, 0);
  if (size == 0) return true;
  return ok(Ort::GetApi().KernelInfoGetAttributeArray_int64(info_, name, value->data(), &size));
}

bool Attributes::present(const char* name) const {
  const OrtApi& api = Ort::GetApi();
  int64_t i = 0;
  float f = 0;
  size_t size = 0;
  return ok(api.KernelInfoGetAttribute_int64(info_, name, &i)) ||
         ok(api.KernelInfoGetAttribute_float(info_, name, &f)) ||
         ok(api.KernelInfoGetAttributeArray_int64(info_, name, nullptr, &size)) ||
         ok(api.KernelInfoGetAttributeArray_float(info_, name, nullptr, &size)) ||
         ok(api.KernelInfoGetAttribute_string(info_, name, nullptr, &size));
}

void Attributes::missing_or_mistyped(const char* name, const char* type) const {
  if (present(name)) invalid(op_, "attribute '", name, "' must be of type ", type);
  invalid(op_, "missing required attribute '", name, "' (", type, ")");
}

int64_t Attributes::get_int(const char* name) const {
  int64_t v = 0;
  if (!try_int(name, &v)) missing_or_mistyped(name, "int");
  return v;
}

int64_t Attributes::get_int(const char* name, int64_t default_value) const {
  int64_t v = 0;
  if (try_int(name, &v)) return v;
  if (present(name)) invalid(op_, "attribute '", name, "' must be of type int");
  return default_value;
}

float Attributes::get_float(const char* name) const {
  float v = 0;
  if (!ok(Ort::GetApi().KernelInfoGetAttribute_float(info_, name, &v))) missing_or_mistyped(name, "float");
  return v;
}

std::string Attributes::get_string(const char* name, const std::string& default_value) const {
  size_t size = 0;
  if (!ok(Ort::GetApi().KernelInfoGetAttribute_string(info_, name, nullptr, &size))) {
    if (present(name)) invalid(op_, "attribute '", name, "' must be of type string");
    return default_value;
  }
  std::string v(size, '\0');
  if (!ok(Ort::GetApi().KernelInfoGetAttribute_string(info_, name, v.data(), &size)))
    invalid(op_, "attribute '", name, "' could not be read");
  v.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  return v;
}

std::vector<int64_t> Attributes::get_ints(const char* name) const {
  std::vector<int64_t> v;
  if (!try_ints(name, &v)) missing_or_mistyped(name, "ints");
  return v;
}

std::vector<int64_t> Attributes::get_ints(const char* name, const std::vector<int64_t>& default_value) const {
  std::vector<int64_t> v;
  if (try_ints(name, &v)) return v;
  if (present(name)) invalid(op_, "attribute '", name, "' must be of type ints");
  return default_value;
}

// ------------------------------------------------------------------------------ tensors
std::string list_str(const std::vector<int64_t>& values) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < values.size(); ++i) s << (i ? ", " : "") << values[i];
  s << ']';
  return s.str();
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '(';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) s << ',';
  s << ')';
  return s.str();
}

int64_t checked_mul(const char* op, int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) invalid(op, what, " is too large");
  return r;
}

namespace {
void describe(const Ort::ConstValue& value, std::vector<int64_t>* shape, size_t* count,
              ONNXTensorElementDataType* type) {
  auto info = value.GetTensorTypeAndShapeInfo();
  *shape = info.GetShape();
  *count = info.GetElementCount();
  *type = info.GetElementType();
}

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    default: return "another type";
  }
}
}  // namespace

ConstantInput constant_input(const OrtKernelInfo* info, size_t index) {
  ConstantInput c;
  int is_constant = 0;
  Ort::ConstKernelInfo kinfo(info);
  Ort::ConstValue value = kinfo.GetTensorConstantInput(index, &is_constant);
  if (!is_constant || value == nullptr) return c;
  c.is_constant = true;
  describe(value, &c.shape, &c.count, &c.type);
  c.data = value.GetTensorRawData();
  return c;
}

Input get_input(const char* op, Ort::KernelContext& ctx, size_t index, const char* name,
                ONNXTensorElementDataType type) {
  Ort::ConstValue value = ctx.GetInput(index);
  if (value == nullptr) invalid(op, "input '", name, "' is missing");
  Input in;
  ONNXTensorElementDataType actual = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  describe(value, &in.shape, &in.count, &actual);
  if (actual != type) invalid(op, "input '", name, "' must be ", type_name(type), ", got ", type_name(actual));
  in.data = value.GetTensorRawData();
  return in;
}

void* optional_output(OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& shape) {
  return optional_output(ctx, index, shape.data(), shape.size());
}

void* optional_output(OrtKernelContext* ctx, size_t index, const int64_t* dims, size_t rank) {
  const OrtApi& api = Ort::GetApi();
  size_t count = 0;
  Ort::ThrowOnError(api.KernelContext_GetOutputCount(ctx, &count));
  if (index >= count) return nullptr;
  OrtValue* out = nullptr;
  Ort::ThrowOnError(api.KernelContext_GetOutput(ctx, index, dims, rank, &out));
  if (out == nullptr) return nullptr;
  void* data = nullptr;
  Ort::ThrowOnError(api.GetTensorMutableData(out, &data));
  return data;
}

std::vector<int64_t> InputView::shape() const {
  if (rank > kMaxRank) return big;
  return std::vector<int64_t>(dims, dims + rank);
}

InputView input_view(const char* op, const OrtKernelContext* ctx, size_t index, const char* name,
                     ONNXTensorElementDataType type, bool optional) {
  const OrtApi& api = Ort::GetApi();
  InputView v;
  size_t inputs = 0;
  Ort::ThrowOnError(api.KernelContext_GetInputCount(ctx, &inputs));
  const OrtValue* value = nullptr;
  if (index < inputs) Ort::ThrowOnError(api.KernelContext_GetInput(ctx, index, &value));
  if (value == nullptr) {
    if (!optional) invalid(op, "input '", name, "' is missing");
    return v;
  }
  OrtTensorTypeAndShapeInfo* info = nullptr;
  Ort::ThrowOnError(api.GetTensorTypeAndShape(value, &info));
  ONNXTensorElementDataType actual = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  OrtStatus* st = api.GetTensorElementType(info, &actual);
  if (st == nullptr) st = api.GetDimensionsCount(info, &v.rank);
  if (st == nullptr) st = api.GetTensorShapeElementCount(info, &v.count);
  if (st == nullptr) {
    if (v.rank <= InputView::kMaxRank) {
      st = api.GetDimensions(info, v.dims, v.rank);
    } else {
      v.big.assign(v.rank, 0);
      st = api.GetDimensions(info, v.big.data(), v.rank);
    }
  }
  api.ReleaseTensorTypeAndShapeInfo(info);
  Ort::ThrowOnError(st);
  if (actual != type) invalid(op, "input '", name, "' must be ", type_name(type), ", got ", type_name(actual));
  void* data = nullptr;  // API 21 has no const accessor (the C++ API const_casts too)
  Ort::ThrowOnError(api.GetTensorMutableData(const_cast<OrtValue*>(value), &data));
  v.data = data;
  v.present = true;
  return v;
}

const void* optional_input(const char* op, const OrtKernelContext* ctx, size_t index, const char* name,
                           ONNXTensorElementDataType type, std::vector<int64_t>* shape) {
  const OrtApi& api = Ort::GetApi();
  size_t count = 0;
  Ort::ThrowOnError(api.KernelContext_GetInputCount(ctx, &count));
  if (index >= count) return nullptr;
  const OrtValue* in = nullptr;
  Ort::ThrowOnError(api.KernelContext_GetInput(ctx, index, &in));
  if (in == nullptr) return nullptr;
  Ort::ConstValue value(in);
  size_t n = 0;
  ONNXTensorElementDataType actual = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  describe(value, shape, &n, &actual);
  if (actual != type) invalid(op, "input '", name, "' must be ", type_name(type), ", got ", type_name(actual));
  return value.GetTensorRawData();
}

// ------------------------------------------------------------------------------ threads
namespace {
struct ParallelJob {
  const std::function<void(size_t)>* fn;
  std::mutex mutex;
  std::exception_ptr error;
};

void run_task(void* user, size_t i) {
  auto* job = static_cast<ParallelJob*>(user);
  try {
    (*job->fn)(i);
  } catch (...) {
    std::lock_guard<std::mutex> lock(job->mutex);
    if (!job->error) job->error = std::current_exception();
  }
}
}  // namespace

void parallel_for(Ort::KernelContext& ctx, size_t total, const std::function<void(size_t)>& fn) {
  if (total == 0) return;
  if (total == 1) {
    fn(0);
    return;
  }
  ParallelJob job;
  job.fn = &fn;
  ctx.ParallelFor(&run_task, total, 0, &job);
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace qexport
