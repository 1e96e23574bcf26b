// qexport-run: run an exported qexport model with ONNX Runtime's C/C++ API, without Python.
//
//   qexport-run model.onnx --input input=x.npy --output-dir out/ [--repeat N] [--threads T]
//
// ONNX Runtime is loaded at run time (dlopen) from --ort, else libonnxruntime.so.1 beside this
// program, else the system's library search path; the custom-op library from --ops, else
// libqexport_ops.so beside this program. So the board needs exactly three files in one folder:
// qexport-run, libonnxruntime.so.1 and libqexport_ops.so. See docs/deploy-arm.md.
//
// Exit status: 0 success, 1 any error (message on stderr, starting with "qexport-run: error:"),
// 2 bad command line.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include <onnxruntime_cxx_api.h>

#include "npy.h"

#ifndef QEXPORT_RUN_VERSION
#define QEXPORT_RUN_VERSION "0.1.0"
#endif

namespace fs = std::filesystem;
using namespace qexport_run;

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char kUsage[] =
    "usage: qexport-run MODEL.onnx [options]\n"
    "\n"
    "Runs an ONNX model exported by qexport (ai.qexport custom ops) with ONNX Runtime.\n"
    "\n"
    "options:\n"
    "  --input [NAME=]FILE.npy  an input tensor (repeat for each model input; NAME may be left out\n"
    "                           when the model has a single input). C-order, little-endian .npy of\n"
    "                           the model's dtype; dynamic dimensions take any size\n"
    "  --output-dir DIR         write every output as DIR/<output name>.npy, plus DIR/outputs.tsv\n"
    "                           (name, file, dtype, shape per line)\n"
    "  --repeat N               run N times (default 1); prints every run's time and the median\n"
    "  --warmup N               untimed runs before the timed ones (default 0)\n"
    "  --threads T              intra-op threads (default: all CPUs of this machine)\n"
    "  --ops PATH               the qexport custom-op library (default: libqexport_ops.so beside\n"
    "                           qexport-run)\n"
    "  --ort PATH               ONNX Runtime's library (default: libonnxruntime.so.1 beside\n"
    "                           qexport-run, else the system's libonnxruntime.so.1)\n"
    "  --quiet                  print only the thread count, the timing summary and errors\n"
    "  --verbose                also show ONNX Runtime's own warnings and logs\n"
    "  --version, -h/--help\n";

std::string exe_dir() {
  std::vector<char> buf(4096);
  const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return "";
  return fs::path(std::string(buf.data(), static_cast<size_t>(n))).parent_path().string();
}

bool is_file(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

long parse_int(const std::string& opt, const std::string& value, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
    throw UsageError(opt + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                     value + "'");
  }
  return v;
}

struct Options {
  std::string model;
  std::vector<std::pair<std::string, std::string>> inputs;  // (name or "", file)
  std::string output_dir;
  std::string ops;
  std::string ort;
  long repeat = 1;
  long warmup = 0;
  long threads = 0;  // 0: all CPUs
  bool quiet = false;
  bool verbose = false;
};

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& opt) -> std::string {
      if (i + 1 >= args.size()) throw UsageError(opt + " needs a value");
      return args[++i];
    };
    // --opt=value as well as --opt value
    std::string opt = a, inline_value;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0 && a.find('=') != std::string::npos) {
      opt = a.substr(0, a.find('='));
      inline_value = a.substr(a.find('=') + 1);
      has_inline = true;
    }
    auto val = [&]() { return has_inline ? inline_value : value(opt); };
    if (opt == "-h" || opt == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (opt == "--version") {
      std::printf("qexport-run %s (built with ONNX Runtime API %d)\n", QEXPORT_RUN_VERSION, ORT_API_VERSION);
      std::exit(0);
    } else if (opt == "--input" || opt == "-i") {
      const std::string v = val();
      const size_t eq = v.find('=');
      if (eq == std::string::npos) {
        o.inputs.emplace_back("", v);
      } else {
        o.inputs.emplace_back(v.substr(0, eq), v.substr(eq + 1));
      }
    } else if (opt == "--output-dir" || opt == "-o") {
      o.output_dir = val();
    } else if (opt == "--ops") {
      o.ops = val();
    } else if (opt == "--ort") {
      o.ort = val();
    } else if (opt == "--repeat") {
      o.repeat = parse_int(opt, val(), 1, 1000000);
    } else if (opt == "--warmup") {
      o.warmup = parse_int(opt, val(), 0, 1000000);
    } else if (opt == "--threads") {
      o.threads = parse_int(opt, val(), 1, 4096);
    } else if (opt == "--quiet" || opt == "-q") {
      o.quiet = true;
    } else if (opt == "--verbose" || opt == "-v") {
      o.verbose = true;
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'");
    } else if (o.model.empty()) {
      o.model = a;
    } else {
      throw UsageError("unexpected argument '" + a + "' (the model is '" + o.model + "')");
    }
  }
  if (o.model.empty()) throw UsageError("no model given");
  return o;
}

// Loads ONNX Runtime and installs its API table for the C++ wrappers. Returns the path used.
std::string load_ort(const Options& o, const OrtApiBase** base_out) {
  std::vector<std::string> candidates;
  const std::string here = exe_dir();
  if (!o.ort.empty()) {
    if (!is_file(o.ort)) throw RunError("ONNX Runtime library '" + o.ort + "' (--ort) not found");
    candidates.push_back(o.ort);
  } else {
    if (!here.empty()) {
      for (const char* name : {"libonnxruntime.so.1", "libonnxruntime.so"}) {
        const std::string p = here + "/" + name;
        if (is_file(p)) candidates.push_back(p);
      }
    }
    candidates.push_back("libonnxruntime.so.1");  // the system's search path
  }
  std::string errors;
  for (const std::string& path : candidates) {
    dlerror();
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = dlerror();
      errors += "\n  " + path + ": " + (e ? e : "dlopen failed");
      continue;
    }
    using GetApiBase = const OrtApiBase* (*)();
    auto get = reinterpret_cast<GetApiBase>(dlsym(h, "OrtGetApiBase"));
    if (get == nullptr) {
      errors += "\n  " + path + ": no OrtGetApiBase symbol (not ONNX Runtime's library)";
      continue;
    }
    const OrtApiBase* base = get();
    const OrtApi* api = base ? base->GetApi(ORT_API_VERSION) : nullptr;
    if (api == nullptr) {
      errors += "\n  " + path + ": ONNX Runtime " + (base ? base->GetVersionString() : "?") +
                " does not provide API version " + std::to_string(ORT_API_VERSION) + " (need ONNX Runtime >= 1.21)";
      continue;
    }
    Ort::InitApi(api);
    *base_out = base;
    return path;
  }
  throw RunError("could not load ONNX Runtime (libonnxruntime.so.1). Copy libonnxruntime.so.1 (from the "
                 "onnxruntime wheel for this CPU: onnxruntime/capi/libonnxruntime.so.1.x.y, renamed) beside "
                 "qexport-run, or pass --ort PATH. Tried:" +
                 errors);
}

std::string find_ops(const Options& o) {
  if (!o.ops.empty()) {
    if (!is_file(o.ops)) throw RunError("custom-op library '" + o.ops + "' (--ops) not found");
    return o.ops;
  }
  const std::string p = exe_dir() + "/libqexport_ops.so";
  if (!is_file(p)) {
    throw RunError("custom-op library not found: no --ops given and no libqexport_ops.so beside qexport-run (" + p +
                   "). Pass --ops PATH to the libqexport_ops.so built for this CPU");
  }
  return p;
}

struct TensorSpec {
  std::string name;
  int type = 0;
  std::vector<int64_t> shape;         // -1: dynamic
  std::vector<std::string> dim_names;  // symbolic names ("" if none)
  bool is_tensor = true;
};

std::string spec_shape_str(const TensorSpec& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.shape.size(); ++i) {
    if (i) out += ", ";
    if (s.shape[i] >= 0) {
      out += std::to_string(s.shape[i]);
    } else {
      out += (i < s.dim_names.size() && !s.dim_names[i].empty()) ? s.dim_names[i] : "?";
    }
  }
  if (s.shape.size() == 1) out += ",";
  return out + ")";
}

TensorSpec describe(const std::string& name, const Ort::TypeInfo& info) {
  TensorSpec s;
  s.name = name;
  if (info.GetONNXType() != ONNX_TYPE_TENSOR) {
    s.is_tensor = false;
    return s;
  }
  auto t = info.GetTensorTypeAndShapeInfo();
  s.type = static_cast<int>(t.GetElementType());
  s.shape = t.GetShape();
  std::vector<const char*> names(s.shape.size(), nullptr);
  if (!names.empty()) t.GetSymbolicDimensions(names.data(), names.size());
  for (const char* n : names) s.dim_names.emplace_back(n ? n : "");
  return s;
}

std::string spec_str(const TensorSpec& s) {
  if (!s.is_tensor) return s.name + ": (not a tensor)";
  return s.name + ": " + onnx_type_name(s.type) + " " + spec_shape_str(s);
}

// Output file name: the tensor name with anything but [A-Za-z0-9._-] replaced by '_'.
std::string safe_name(const std::string& name) {
  std::string s;
  for (char c : name) s += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c : '_';
  if (s.empty() || s[0] == '.') s = "output" + s;
  return s;
}

int run(const Options& o) {
  // Check the files before anything else: clear messages for the common mistakes.
  if (!is_file(o.model)) throw RunError("model file '" + o.model + "' not found");
  const std::string ops_path = find_ops(o);
  std::vector<std::pair<std::string, NpyArray>> arrays;
  for (const auto& [name, file] : o.inputs) arrays.emplace_back(name, read_npy(file));

  const OrtApiBase* base = nullptr;
  const std::string ort_path = load_ort(o, &base);
  const int threads = o.threads > 0 ? static_cast<int>(o.threads)
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  // ONNX Runtime's log repeats every error this program reports itself: quiet unless --verbose.
  Ort::Env env(o.verbose ? ORT_LOGGING_LEVEL_WARNING : ORT_LOGGING_LEVEL_FATAL, "qexport-run");
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(threads);
  so.SetInterOpNumThreads(1);
  so.SetExecutionMode(ORT_SEQUENTIAL);
  so.SetGraphOptimizationLevel(ORT_ENABLE_ALL);  // as onnxruntime.InferenceSession's default
  try {
    so.RegisterCustomOpsLibrary(ops_path.c_str());
  } catch (const Ort::Exception& e) {
    throw RunError("could not load the custom-op library '" + ops_path + "': " + e.what());
  }
  std::unique_ptr<Ort::Session> session;
  try {
    session = std::make_unique<Ort::Session>(env, o.model.c_str(), so);
  } catch (const Ort::Exception& e) {
    throw RunError("could not load the model '" + o.model + "': " + e.what());
  }
  Ort::AllocatorWithDefaultOptions alloc;

  std::vector<TensorSpec> ins, outs;
  for (size_t i = 0; i < session->GetInputCount(); ++i) {
    ins.push_back(describe(session->GetInputNameAllocated(i, alloc).get(), session->GetInputTypeInfo(i)));
  }
  for (size_t i = 0; i < session->GetOutputCount(); ++i) {
    outs.push_back(describe(session->GetOutputNameAllocated(i, alloc).get(), session->GetOutputTypeInfo(i)));
  }
  auto expected = [&]() {
    std::string s;
    for (const auto& in : ins) s += "\n  " + spec_str(in);
    return s;
  };

  // Match the .npy files to the model's inputs.
  std::map<std::string, size_t> by_name;  // input name -> index into arrays
  for (size_t k = 0; k < arrays.size(); ++k) {
    std::string name = arrays[k].first;
    if (name.empty()) {
      if (ins.size() != 1) {
        throw RunError("the model has " + std::to_string(ins.size()) + " inputs: name each one with --input NAME=FILE.npy." +
                       " The model's inputs:" + expected());
      }
      name = ins[0].name;
      arrays[k].first = name;
    }
    if (std::none_of(ins.begin(), ins.end(), [&](const TensorSpec& s) { return s.name == name; })) {
      throw RunError("the model has no input named '" + name + "'. The model's inputs:" + expected());
    }
    if (!by_name.emplace(name, k).second) throw RunError("input '" + name + "' given twice");
  }
  Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::Value> feeds;
  std::vector<const char*> in_names;
  for (const TensorSpec& spec : ins) {
    auto it = by_name.find(spec.name);
    if (it == by_name.end()) {
      throw RunError("missing input '" + spec.name + "' (pass --input " + spec.name + "=FILE.npy). The model's inputs:" +
                     expected());
    }
    const std::string& file = o.inputs[it->second].second;
    NpyArray& arr = arrays[it->second].second;
    if (!spec.is_tensor) throw RunError("input '" + spec.name + "' is not a tensor: not supported by qexport-run");
    if (arr.dtype->onnx_type != spec.type) {
      throw RunError("input '" + spec.name + "': the model wants " + onnx_type_name(spec.type) + ", " + file + " holds " +
                     arr.dtype->name + " (convert it, e.g. x.astype(np." + onnx_type_name(spec.type) + "))");
    }
    // An input declared without a shape reads as rank 0 here (as a scalar would): leave that
    // case to ONNX Runtime's own check at run time.
    const bool unknown = spec.shape.empty();
    bool ok = unknown || arr.shape.size() == spec.shape.size();
    for (size_t d = 0; ok && !unknown && d < arr.shape.size(); ++d) {
      ok = spec.shape[d] < 0 || spec.shape[d] == arr.shape[d];
    }
    if (!ok) {
      throw RunError("input '" + spec.name + "': " + file + " has shape " + shape_str(arr.shape) +
                     ", the model wants " + spec_shape_str(spec) + " (names and ? are dimensions of any size)");
    }
    feeds.push_back(Ort::Value::CreateTensor(mem, arr.data.data(), arr.data.size(), arr.shape.data(),
                                             arr.shape.size(), static_cast<ONNXTensorElementDataType>(spec.type)));
    in_names.push_back(spec.name.c_str());
  }
  std::vector<const char*> out_names;
  for (const TensorSpec& s : outs) out_names.push_back(s.name.c_str());

  if (!o.quiet) {
    std::printf("model: %s\n", o.model.c_str());
    std::printf("ONNX Runtime %s: %s\n", base->GetVersionString(), ort_path.c_str());
    std::printf("custom ops: %s\n", ops_path.c_str());
    for (size_t k = 0; k < ins.size(); ++k) {
      const NpyArray& arr = arrays[by_name[ins[k].name]].second;
      std::printf("input %s: %s %s\n", ins[k].name.c_str(), arr.dtype->name, shape_str(arr.shape).c_str());
    }
  }
  std::printf("threads: %d intra-op%s\n", threads, o.threads > 0 ? "" : " (default: all CPUs; set with --threads)");
  std::fflush(stdout);

  std::vector<Ort::Value> results;
  auto run_once = [&]() {
    try {
      results = session->Run(Ort::RunOptions{nullptr}, in_names.data(), feeds.data(), feeds.size(), out_names.data(),
                             out_names.size());
    } catch (const Ort::Exception& e) {
      throw RunError(std::string("inference failed: ") + e.what());
    }
  };
  for (long w = 0; w < o.warmup; ++w) run_once();
  std::vector<double> ms;
  for (long r = 0; r < o.repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run_once();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (!o.quiet) std::printf("run %ld/%ld: %.3f ms\n", r + 1, o.repeat, ms.back());
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  std::printf("time: median %.3f ms, min %.3f ms, max %.3f ms over %zu run%s, %d thread%s\n", median, sorted.front(),
              sorted.back(), n, n == 1 ? "" : "s", threads, threads == 1 ? "" : "s");

  // Outputs of the last run.
  std::ofstream tsv;
  if (!o.output_dir.empty()) {
    std::error_code ec;
    fs::create_directories(o.output_dir, ec);
    if (ec) throw RunError("cannot create the output folder '" + o.output_dir + "': " + ec.message());
    tsv.open(fs::path(o.output_dir) / "outputs.tsv", std::ios::trunc);
    if (!tsv) throw RunError("cannot write " + (fs::path(o.output_dir) / "outputs.tsv").string());
  }
  std::set<std::string> used;
  for (size_t k = 0; k < results.size(); ++k) {
    Ort::Value& v = results[k];
    if (!v.IsTensor()) throw RunError("output '" + outs[k].name + "' is not a tensor: not supported by qexport-run");
    auto info = v.GetTensorTypeAndShapeInfo();
    const int type = static_cast<int>(info.GetElementType());
    const std::vector<int64_t> shape = info.GetShape();
    const DType* dt = dtype_from_onnx(type);
    if (!o.quiet) std::printf("output %s: %s %s", outs[k].name.c_str(), onnx_type_name(type).c_str(), shape_str(shape).c_str());
    if (!o.output_dir.empty()) {
      if (dt == nullptr) throw RunError("output '" + outs[k].name + "' has type " + onnx_type_name(type) + ", which .npy output does not support");
      std::string file = safe_name(outs[k].name);
      for (int dup = 1; used.count(file); ++dup) file = safe_name(outs[k].name) + "_" + std::to_string(dup);
      used.insert(file);
      file += ".npy";
      const std::string path = (fs::path(o.output_dir) / file).string();
      const size_t nbytes = info.GetElementCount() * dt->size;
      write_npy(path, *dt, shape, v.GetTensorRawData(), nbytes);
      tsv << outs[k].name << '\t' << file << '\t' << dt->name << '\t' << shape_str(shape) << '\n';
      if (!o.quiet) std::printf(" -> %s", path.c_str());
    }
    if (!o.quiet) std::printf("\n");
  }
  if (tsv.is_open()) {
    tsv.close();
    if (!tsv) throw RunError("cannot write " + (fs::path(o.output_dir) / "outputs.tsv").string());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opts;
  try {
    opts = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "qexport-run: error: %s\n\n%s", e.what(), kUsage);
    return 2;
  }
  try {
    return run(opts);
  } catch (const std::exception& e) {  // RunError, NpyError, Ort::Exception
    std::fflush(stdout);
    std::fprintf(stderr, "qexport-run: error: %s\n", e.what());
    return 1;
  }
}
