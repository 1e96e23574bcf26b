// The ai.qexport operators: the one list of op names (docs/ops.md).
#pragma once

#include "qexport/ort.h"

#define QEXPORT_DOMAIN "ai.qexport"

// X(Name): every op of the domain, in the order qexport_op_names() reports them. Each op is
// defined once with QEXPORT_DEFINE_OP(Name, OpClass, ...) in a kernel file; a name in this list
// without a definition (or the reverse) fails to link.
#define QEXPORT_OP_LIST(X) \
  X(AsqQuantize)           \
  X(LsqQuantize)           \
  X(QConv)                 \
  X(QGemm)                 \
  X(QConvFused)            \
  X(GlobalAvgPool)         \
  X(Sigmoid)               \
  X(Silu)                  \
  X(PostConv)              \
  X(PotConv)               \
  X(UniformConv)           \
  X(PostGemm)              \
  X(PotGemm)               \
  X(UniformGemm)           \
  X(PostConvFused)         \
  X(PotConvFused)          \
  X(UniformConvFused)

namespace qexport {

#define QEXPORT_DECLARE_OP(name) OrtCustomOp* op_##name();
QEXPORT_OP_LIST(QEXPORT_DECLARE_OP)
#undef QEXPORT_DECLARE_OP

}  // namespace qexport

// Defines qexport::op_<name>(): a static op object (it must outlive every session) constructed
// as OpClass(#name), so that the name is spelled only in the list above.
#define QEXPORT_DEFINE_OP(name, OpClass) \
  OrtCustomOp* qexport::op_##name() {    \
    static OpClass op(#name);            \
    return &op;                          \
  }
