// Entry points of libqexport_ops: RegisterCustomOps (called by ONNX Runtime) and
// qexport_op_names (read by qexport.runtime.op_names through ctypes).
#include <string>

#include "qexport/common.h"
#include "qexport/isa.h"
#include "qexport/ops.h"

namespace {

// The domain with every op of QEXPORT_OP_LIST. Created once and never released: ONNX Runtime
// keeps pointers to it (and to the static op objects) in every session that uses it.
OrtCustomOpDomain* make_domain() {
  const OrtApi& api = Ort::GetApi();
  OrtCustomOpDomain* domain = nullptr;
  Ort::ThrowOnError(api.CreateCustomOpDomain(QEXPORT_DOMAIN, &domain));
  const OrtCustomOp* ops[] = {
#define QEXPORT_OP_POINTER(name) qexport::op_##name(),
      QEXPORT_OP_LIST(QEXPORT_OP_POINTER)
#undef QEXPORT_OP_POINTER
  };
  for (const OrtCustomOp* op : ops) {
    OrtStatus* st = api.CustomOpDomain_Add(domain, op);
    if (st != nullptr) {
      api.ReleaseCustomOpDomain(domain);
      Ort::ThrowOnError(st);
    }
  }
  return domain;
}

}  // namespace

extern "C" QEXPORT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                     const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // nothing to report an error with
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // CreateStatus is part of every API version.
    const OrtApi* v1 = api_base->GetApi(1);
    if (v1 == nullptr) return nullptr;
    const std::string msg = std::string("qexport: this ONNX Runtime (") + api_base->GetVersionString() +
                            ") does not provide ORT API version " + std::to_string(ORT_API_VERSION) +
                            " that libqexport_ops was built for (ONNX Runtime >= 1.21 is needed)";
    return v1->CreateStatus(ORT_FAIL, msg.c_str());
  }
  Ort::InitApi(api);
  return qexport::guarded("qexport", "", [&] {
    static OrtCustomOpDomain* const domain = make_domain();
    Ort::ThrowOnError(api->AddCustomOpDomain(options, domain));
  });
}

// "scalar,avx2,avx512vnni,amx": the kernel paths this library and CPU support, slowest first
// (QEXPORT_KERNEL_ISA may name any of them; the last one is the default).
extern "C" QEXPORT_EXPORT const char* qexport_kernel_isas(void) {
  static const std::string isas = qexport::available_isas();
  return isas.c_str();
}

extern "C" QEXPORT_EXPORT const char* qexport_op_names(void) {
  static const char names[] =
#define QEXPORT_OP_NAME(name) "," #name
      QEXPORT_OP_LIST(QEXPORT_OP_NAME)
#undef QEXPORT_OP_NAME
      ;
  return names + 1;  // skip the leading comma
}
