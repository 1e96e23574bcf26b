"""ARM (aarch64) dynamic instruction counts under qemu: a proxy, not time (``bench.py --arm-icount``).

No ARM hardware is at hand, and emulation time says nothing about a board's time (qemu's TCG
turns one float instruction into a call to a soft-float helper, one integer vector instruction
into a few host ones). What emulation does measure exactly is the number of aarch64 instructions
a program executes. So each model runs under qemu-aarch64 with a TCG plugin
(benchmarks/qemu_insn_count.c: an inline per-thread counter add per translated block) that counts
every executed guest instruction, with the native runner (qexport-run), one intra-op thread,
batch 1:

* twice, with ``--repeat 1`` and ``--repeat 11``; the per-inference count is the slope
  ``(count(11) - count(1)) / 10``, which removes process start, library loading and session
  creation (weight packing) and keeps the steady-state inference only;
* on ``-cpu cortex-a53`` (ARMv8.0: NEON only, qexport takes its ``neon`` path) and ``-cpu
  cortex-a76`` (ARMv8.2 with dotprod: qexport's ``dotprod`` path; ONNX Runtime's MLAS also
  switches its int8 GEMM to the dot-product kernels there), checked per node with
  QEXPORT_KERNEL_TRACE=1;
* for ONNX Runtime's float model, its int8 QDQ model and qexport's ASQ+POST models, all built by
  bench.py from the same weights.

An instruction count weighs a 128-bit SDOT (16 multiply-adds) like a scalar add, and ignores
caches, memory bandwidth, latencies and issue width: it is a proxy for time on an in-order core
at best, and says nothing of memory-bound phases.

The qemu: Debian's qemu-user is static and cannot load plugins, so
:func:`qexport.deploy.fetch_qemu_plugins` builds the aarch64 user-mode emulator with plugins from
Debian's qemu source package once (cached); the plugin is compiled against that qemu's
qemu-plugin.h (cached by source hash).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

PLUGIN_SOURCE = Path(__file__).resolve().with_name("qemu_insn_count.c")
#: qemu -cpu model -> the qexport kernel path it selects.
CPUS = (("cortex-a53", "neon"), ("cortex-a76", "dotprod"))
#: the --repeat values whose counts give the per-inference count (the slope) and its linearity.
REPEATS = (1, 6, 11)
#: runs per --repeat value; the lowest count is kept (a rare run executes tens of millions of
#: extra instructions in start-up work: seen once in about 100 runs, always extra, never fewer).
TRIES = 2
TITLE = "ARM (aarch64) instruction counts under qemu: a proxy, not time"
_COUNT = re.compile(r"^qexport-icount: insns=(\d+)\s*$", re.M)


# --------------------------------------------------------------------------- pure logic (unit-tested)
def parse_count(text: str) -> int:
    """The instruction count in the plugin's output (exactly one ``qexport-icount: insns=N`` line)."""
    found = _COUNT.findall(text)
    if len(found) != 1:
        raise ValueError(f"expected one 'qexport-icount: insns=N' line, found {len(found)} in {text[-300:]!r}")
    return int(found[0])


def per_inference(counts: dict[int, int]) -> float:
    """Instructions per inference: the least-squares slope of the count over the number of
    inferences (with two runs, their difference over the difference of their repeats)."""
    if len(counts) < 2:
        raise ValueError("need counts of at least two different numbers of inferences")
    n = np.array(sorted(counts), dtype=np.float64)
    c = np.array([counts[k] for k in sorted(counts)], dtype=np.float64)
    slope = float(((n - n.mean()) * (c - c.mean())).sum() / ((n - n.mean()) ** 2).sum())
    if slope <= 0:
        raise ValueError(f"the count does not grow with the number of inferences: {counts}")
    return slope


_OPENAT = re.compile(r'openat\([^,]*,"([^"]+)",[^)]*\) = (\d+)\s*$')
_CLOSE = re.compile(r"\bclose\((\d+)\) = 0\s*$")
_MMAP = re.compile(r"\bmmap\((?:NULL|0x[0-9a-f]+),(\d+),([A-Z_|]+),[A-Z_|]+,(-?\d+),(0x[0-9a-f]+|\d+)\) = "
                   r"(0x[0-9a-f]+)\s*$")


def parse_mappings(strace: str) -> list[tuple[int, int, str, int]]:
    """The executable file mappings in qemu's ``-strace`` log: (start, end, file, load base), where
    the load base is the address the file's offset 0 was mapped at (symbol address = pc - base)."""
    fds: dict[int, str] = {}
    bases: dict[str, int] = {}
    regions = []
    for line in strace.splitlines():
        m = _OPENAT.search(line)
        if m:
            fds[int(m.group(2))] = m.group(1)
            continue
        m = _CLOSE.search(line)
        if m:
            fds.pop(int(m.group(1)), None)
            continue
        m = _MMAP.search(line)
        if m and int(m.group(3)) in fds:
            size, prot, path = int(m.group(1)), m.group(2), fds[int(m.group(3))]
            offset, addr = int(m.group(4), 0), int(m.group(5), 16)
            if offset == 0:
                bases[path] = addr
            if "PROT_EXEC" in prot:
                regions.append((addr, addr + size, path, bases.get(path, addr - offset)))
    return sorted(regions)


def attribute(blocks: str, regions: Sequence[tuple[int, int, str, int]],
              symbols: dict[str, tuple[list[int], list[str]]]) -> dict[str, int]:
    """Executed instructions per place: ``<library file name>`` for a mapped file, or
    ``<library>:<symbol>`` where ``symbols`` has the file's sorted (addresses, names); what lies in no
    mapped file (the runner and the dynamic loader, which qemu maps itself) is ``(other)``.
    ``blocks`` is the plugin's blocks= output (``<start hex> <insns> <executions>`` lines)."""
    import bisect

    starts = [r[0] for r in regions]
    out: dict[str, int] = {}
    for line in blocks.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        pc, n = int(parts[0], 16), int(parts[1]) * int(parts[2])
        k = bisect.bisect_right(starts, pc) - 1
        place = "(other)"
        if k >= 0 and pc < regions[k][1]:
            path, base = regions[k][2], regions[k][3]
            place = Path(path).name
            if place in symbols:
                addrs, names = symbols[place]
                j = bisect.bisect_right(addrs, pc - base) - 1
                place += ":" + (names[j] if j >= 0 else "?")
        out[place] = out.get(place, 0) + n
    return out


def nonlinearity(counts: dict[int, int]) -> float:
    """How far the counts are from a straight line in the number of inferences: the largest
    residual of the least-squares line, relative to the per-inference count (0 for two points)."""
    n = np.array(sorted(counts), dtype=np.float64)
    c = np.array([counts[k] for k in sorted(counts)], dtype=np.float64)
    slope = per_inference(counts)
    resid = c - (c.mean() + slope * (n - n.mean()))
    return float(np.abs(resid).max() / slope)


def ratio_rows(records: Iterable[dict]) -> list[dict]:
    """One row per (network, qexport bits, cpu): the per-inference counts of qexport, ONNX Runtime
    int8 and float on the same emulated CPU, and the ratios qexport / int8 and qexport / float."""
    records = list(records)
    base = {(r["network"], r["cpu"], r["variant"]): r["insns_per_inference"] for r in records
            if r["variant"] in ("ort_float", "ort_int8")}
    rows = []
    for r in records:
        if r["variant"] != "qexport":
            continue
        f, i = base.get((r["network"], r["cpu"], "ort_float")), base.get((r["network"], r["cpu"], "ort_int8"))
        q = r["insns_per_inference"]
        rows.append({"network": r["network"], "bits": r["bits"], "cpu": r["cpu"], "path": r["path"],
                     "qexport": q, "ort_int8": i, "ort_float": f,
                     "qexport_vs_int8": q / i if i else None, "qexport_vs_float": q / f if f else None})
    order = {cpu: k for k, (cpu, _) in enumerate(CPUS)}
    return sorted(rows, key=lambda row: (row["network"], -row["bits"], order.get(row["cpu"], 99)))


def _m(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:.2f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _short(name: str) -> str:
    return name.replace("qexport::{anon}::", "").replace("qexport::", "")


def markdown(arm: dict, titles: dict[str, str]) -> list[str]:
    """The docs/performance.md section of ``arm`` (what :func:`measure` returned)."""
    rows = ratio_rows(arm["records"])
    lines = [f"## {TITLE}", "",
             f"Produced by `python benchmarks/bench.py --arm-icount` on {arm['date']} (the x86 sections above are "
             "left as they were; the numbers are under `arm_icount` in performance.json). **These are counts of "
             "executed aarch64 instructions, not times**: emulation says nothing about a board's latency, and an "
             "instruction count weighs a 16-MAC SDOT like a scalar add and ignores caches and memory bandwidth.", "",
             f"Method: qemu-aarch64 {arm['qemu']} (user mode, built with TCG plugins) with the counting plugin "
             "benchmarks/qemu_insn_count.c runs the native runner (qexport-run, ONNX Runtime "
             f"{arm['onnxruntime']} for aarch64) at batch 1, 1 intra-op thread, with `--repeat` "
             f"{', '.join(str(n) for n in arm['repeats'])} (each {arm.get('tries', 1)} time(s), the lowest count "
             "kept); per inference = the least-squares slope of the count over the number of inferences (process "
             "start, library loading and session creation cancel out); the counts lie on that line to within "
             f"{100 * max([r.get('nonlinearity', 0.0) for r in arm['records']] or [0.0]):.2f}% of one inference. "
             "`-cpu cortex-a53` is ARMv8.0 (NEON only: qexport's `neon` path), `-cpu cortex-a76` "
             "ARMv8.2 with dotprod (qexport's `dotprod` path; ONNX Runtime's int8 GEMMs use the dot-product "
             "kernels there too); each qexport node's path is checked with QEXPORT_KERNEL_TRACE=1. Same models "
             "and weights as the x86 tables: ONNX Runtime float, ONNX Runtime int8 QDQ (QLinearConv), qexport "
             "ASQ+POST.", "",
             "Millions of instructions per inference, and qexport's ratio to ONNX Runtime on the same emulated CPU:",
             "",
             "| network | bits | CPU (qexport path) | ORT float | ORT int8 | qexport | qexport / int8 | qexport / float |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {titles.get(r['network'], r['network'])} | {r['bits']} | {r['cpu']} ({r['path']}) | "
                     f"{_m(r['ort_float'])} | {_m(r['ort_int8'])} | {_m(r['qexport'])} | "
                     f"{_x(r['qexport_vs_int8'])} | {_x(r['qexport_vs_float'])} |")
    by = {(r["network"], r["bits"], r["path"]): r["qexport"] for r in rows}
    pairs = [(net, bits, by[(net, bits, "dotprod")] / by[(net, bits, "neon")]) for (net, bits, path) in by
             if path == "dotprod" and (net, bits, "neon") in by]
    if pairs:
        lines += ["", "qexport's dotprod path against its NEON path (instructions): " + ", ".join(
            f"{titles.get(net, net)} {bits}-bit {r:.2f}x" for net, bits, r in pairs) + "."]
    placed = [r for r in arm["records"] if r.get("by_library") and r["variant"] != "ort_float"
              and (r["bits"] is None or r["bits"] == max(x["bits"] for x in rows if x["network"] == r["network"]))]
    if placed:
        lines += ["", "Where the instructions of one inference run (the same slope, per executed block, blocks mapped "
                  "to the library they lie in through qemu's `-strace` of the loader's mmaps, and to functions "
                  "through libqexport_ops.so's symbol table; ONNX Runtime's library is stripped). `(other)`: "
                  "the runner and the dynamic loader.", "",
                  "| network | CPU | model | M insns | by library | qexport's largest functions |", "|---|---|---|---|---|---|"]
        order = {cpu: k for k, (cpu, _) in enumerate(CPUS)}
        for r in sorted(placed, key=lambda r: (r["network"], order.get(r["cpu"], 99), r["variant"] != "qexport")):
            tot = r["insns_per_inference"]
            libs = ", ".join(f"{lib} {100 * v / tot:.0f}%" for lib, v in r["by_library"].items() if v >= 0.005 * tot)
            funcs = ", ".join(f"`{_short(name)}` {100 * v / tot:.0f}%"
                              for name, v in list(r.get("qexport_functions", {}).items())[:6] if v >= 0.01 * tot) or "-"
            model = "ORT int8" if r["variant"] == "ort_int8" else f"qexport w{r['bits']} ({r['path']})"
            lines.append(f"| {titles.get(r['network'], r['network'])} | {r['cpu']} | {model} | {_m(tot)} | {libs} | "
                         f"{funcs} |")
    startup = [r for r in arm["records"] if r["cpu"] == CPUS[-1][0]]
    if startup:
        lines += ["", f"Whole process with one inference on {CPUS[-1][0]} (start, loading, session creation and "
                  "the first run; millions): " + ", ".join(
                      f"{r['network']} {r['variant']}{'' if r['bits'] is None else ' w' + str(r['bits'])} "
                      f"{r['counts'][str(arm['repeats'][0])] / 1e6:.0f}" for r in startup) + "."]
    missing = arm.get("not_measured")
    if missing:
        lines += ["", f"Not measured: {missing}"]
    lines += ["", "Notes:", ""] + list(arm.get("notes", [])) + [""]
    return lines


# --------------------------------------------------------------------------- running
def build_plugin(include: Path, cache: Path) -> Path:
    """benchmarks/qemu_insn_count.c compiled against ``include``/qemu-plugin.h (cached by the hash
    of both files)."""
    key = hashlib.sha256(PLUGIN_SOURCE.read_bytes() + (include / "qemu-plugin.h").read_bytes()).hexdigest()[:16]
    out = cache / f"qemu_insn_count-{key}.so"
    if out.is_file():
        return out
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc) to build the qemu counting plugin: apt-get install gcc")
    glib = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True)
    if glib.returncode != 0:
        raise RuntimeError("glib's headers (qemu-plugin.h includes glib.h) are missing: apt-get install libglib2.0-dev")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", f"-I{include}", *glib.stdout.split(),
                           str(PLUGIN_SOURCE), "-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the qemu counting plugin failed:\n{proc.stderr[-3000:]}")
    os.replace(tmp, out)
    return out


def short_name(demangled: str) -> str:
    """A demangled C++ function name without its return type and parameter lists:
    ``void qexport::(anonymous namespace)::conv<4>(int, float*)`` -> ``qexport::{anon}::conv<4>``."""
    name = demangled.replace("(anonymous namespace)", "{anon}")
    depth, cut, start = 0, len(name), 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if depth == 0 and ch == " " and "operator" not in name[start:i]:
            start = i + 1  # a return type before the name
        if ch == "(" and depth == 0 and i > 0:
            cut = i
            break
    return name[start:cut]


def function_symbols(library: Path) -> tuple[list[int], list[str]]:
    """The sorted function addresses and names (demangled, without parameter lists) of an ELF
    file's symbol table; empty for a stripped file (ONNX Runtime's)."""
    nm = shutil.which("aarch64-linux-gnu-nm") or shutil.which("nm")
    if nm is None:
        return [], []
    proc = subprocess.run([nm, "-C", "-n", "--defined-only", str(library)], capture_output=True, text=True)
    addrs, names = [], []
    for line in proc.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in ("T", "t", "W", "w"):
            addrs.append(int(parts[0], 16))
            names.append(short_name(parts[2]))
    return addrs, names


def count_instructions(model: Path, x: np.ndarray, *, qemu: Path, plugin: Path, cpu: str, runner: Path, ops: Path,
                       ort: Path | None, repeats: Sequence[int] = REPEATS, trace: bool = False,
                       places: bool = False, tries: int = 1, timeout: float = 1800.0
                       ) -> tuple[dict[int, int], str, dict[int, dict[str, int]] | None]:
    """{repeat: executed guest instructions of the whole runner process} for each of ``repeats``
    (1 intra-op thread; the lowest of ``tries`` runs), the stderr of the first run (its kernel-path
    lines with ``trace``), and with ``places`` {repeat: :func:`attribute`'s instructions per
    library / qexport symbol, of the run kept}."""
    from qexport.deploy import RunnerError, RunnerSession
    from qexport.runtime import KERNEL_TRACE_ENV

    with tempfile.TemporaryDirectory(prefix="qexport-icount-") as tmp:
        out = Path(tmp) / "count.txt"
        xfile = Path(tmp) / "x.npy"
        np.save(xfile, np.ascontiguousarray(x, dtype=np.float32))
        env = {k: v for k, v in os.environ.items() if k != KERNEL_TRACE_ENV}
        if trace:
            env[KERNEL_TRACE_ENV] = "1"
        blocks, strace = Path(tmp) / "blocks.txt", Path(tmp) / "strace.log"
        qemu_args = ["-plugin", f"{plugin},out={out}" + (f",blocks={blocks}" if places else "")]
        if places:
            qemu_args += ["-strace", "-D", str(strace)]
        symbols = {ops.name: function_symbols(ops)} if places else {}
        counts, first_stderr, by_place = {}, None, {}
        with RunnerSession(model, runner=runner, ops=ops, ort=ort, qemu=qemu, cpu=cpu, threads=1,
                           qemu_args=qemu_args) as s:
            for n in [n for n in repeats for _ in range(tries)]:
                for f in (out, blocks, strace):
                    f.unlink(missing_ok=True)
                cmd = s.command({s.get_inputs()[0].name: str(xfile)}, None, ["--repeat", str(n), "--quiet"])
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
                if proc.returncode != 0:
                    raise RunnerError(f"qexport-run failed under -cpu {cpu}: {(proc.stderr or proc.stdout)[-2000:]}")
                count = parse_count(out.read_text() if out.is_file() else "")
                if first_stderr is None:
                    first_stderr = proc.stderr
                if n in counts and counts[n] <= count:
                    continue
                counts[n] = count
                if places:
                    by_place[n] = attribute(blocks.read_text(), parse_mappings(strace.read_text()), symbols)
                    if sum(by_place[n].values()) != count:
                        raise RuntimeError(f"the per-block counts add up to {sum(by_place[n].values())}, "
                                           f"the total is {count}")
    return counts, first_stderr or "", (by_place if places else None)


#: the largest nonlinearity (see :func:`nonlinearity`) a model's counts may have; counts that
#: deviate more are measured again, up to ATTEMPTS times in all. A start-up anomaly in both runs of
#: one --repeat value once put ResNet-20's 1-inference count 26.8M instructions high (nonlinearity
#: 2.09, a slope of 4.24M instead of 6.90M). With repeats (1, 6, 11) an excess at one end shifts the
#: slope by 0.6x the nonlinearity it causes, so 0.05 keeps the slope within 3%; counts seen so far
#: lie at 0.0001-0.008, ONNX Runtime int8's on the small CNN (cortex-a76) once at 0.024.
NONLINEARITY_MAX = 0.05
ATTEMPTS = 3


def counts_until_linear(count: Callable[[], tuple[dict[int, int], str, dict | None]], *,
                        attempts: int = ATTEMPTS, limit: float = NONLINEARITY_MAX
                        ) -> tuple[dict[int, int], str, dict | None]:
    """Calls ``count`` (returning :func:`count_instructions`'s triple) until the lowest count seen
    for each number of inferences lies on a straight line within ``limit``; keeps for each its
    lowest count (the anomalies only ever add instructions) and that run's places. Raises when
    ``attempts`` calls do not get there."""
    best: dict[int, int] = {}
    places: dict[int, dict] = {}
    first = None
    for _ in range(attempts):
        counts, err, by_place = count()
        first = err if first is None else first
        for k, v in counts.items():
            if k not in best or v < best[k]:
                best[k] = v
                if by_place is not None:
                    places[k] = by_place[k]
        if nonlinearity(best) <= limit:
            return best, first, (places if places else None)
    raise RuntimeError(f"instruction counts not linear in the number of inferences after {attempts} attempts "
                       f"(nonlinearity {nonlinearity(best):.3f} > {limit}): {best}")


def per_inference_places(by_place: dict[int, dict[str, int]], lo: int, hi: int) -> dict[str, float]:
    """Instructions per inference per place, from the runs with ``lo`` and ``hi`` inferences
    (places whose difference is not positive are left out), largest first."""
    keys = set(by_place[lo]) | set(by_place[hi])
    d = {k: (by_place[hi].get(k, 0) - by_place[lo].get(k, 0)) / (hi - lo) for k in keys}
    return dict(sorted(((k, v) for k, v in d.items() if v > 0), key=lambda kv: (-kv[1], kv[0])))


def measure(nets: dict[str, dict[str, Path]], shapes: dict[str, tuple], macs: dict[str, int], *, cache: Path,
            repeats: Sequence[int] = REPEATS, tries: int = TRIES, say: Callable[[str], None] = print,
            jobs: int | None = None) -> dict:
    """Counts for every network in ``nets`` ({network: {"float"|"int8"|"w<b>": .onnx}}) on each CPU of
    :data:`CPUS`. Returns {"date", "qemu", "onnxruntime", "repeats", "records"} (records: one per
    network, CPU and model)."""
    import datetime

    from qexport.deploy import build_ops, dist_files, fetch_qemu_plugins, ort_version
    from qexport.runtime import parse_kernel_trace

    plugins = fetch_qemu_plugins(jobs=jobs, say=say)
    plugin = build_plugin(plugins.include, cache)
    say(f"arm: qemu-aarch64 {plugins.version} with plugins ({plugins.qemu}); plugin {plugin.name}")
    build_ops("aarch64", cache / "arm-dist", build_dir=cache / "arm-build", jobs=jobs,
              progress=lambda m: None)
    runner, ops, ort = dist_files(cache / "arm-dist", "aarch64")
    records = []
    rng = np.random.default_rng(0)
    for net, paths in nets.items():
        x = rng.random((1, *shapes[net]), dtype=np.float32)
        variants = [("ort_float", None, paths["float"]), ("ort_int8", None, paths["int8"])]
        variants += sorted(((("qexport", int(k[1:]), p)) for k, p in paths.items() if k.startswith("w")),
                           key=lambda v: -v[1])
        for cpu, path in CPUS:
            for variant, bits, model in variants:
                t0 = time.time()
                counts, err, by_place = counts_until_linear(lambda: count_instructions(
                    model, x, qemu=plugins.qemu, plugin=plugin, cpu=cpu, runner=runner, ops=ops, ort=ort,
                    repeats=repeats, trace=variant == "qexport", places=True, tries=tries))
                rec = {"network": net, "cpu": cpu, "path": path if variant == "qexport" else None, "variant": variant,
                       "bits": bits, "model": model.name, "counts": {str(k): v for k, v in counts.items()},
                       "insns_per_inference": per_inference(counts), "nonlinearity": nonlinearity(counts),
                       "macs": macs.get(net)}
                places = per_inference_places(by_place, min(repeats), max(repeats))
                rec["by_library"] = {}
                for place, v in places.items():
                    lib = place.split(":", 1)[0]
                    rec["by_library"][lib] = rec["by_library"].get(lib, 0.0) + v
                rec["qexport_functions"] = {k.split(":", 1)[1]: v for k, v in places.items()
                                            if ":" in k and v >= 0.002 * rec["insns_per_inference"]}
                if rec["macs"]:
                    rec["insns_per_mac"] = rec["insns_per_inference"] / rec["macs"]
                if variant == "qexport":
                    lines = parse_kernel_trace(err)
                    paths_seen: dict[str, int] = {}
                    for line in lines:
                        paths_seen[line.path] = paths_seen.get(line.path, 0) + 1
                    wrong = sorted({line.selected for line in lines} - {path})
                    if not lines or wrong:
                        raise RuntimeError(f"{net} w{bits} on {cpu}: expected qexport's {path} path, the kernel trace "
                                           f"says {wrong or 'nothing'}")
                    rec["kernel_paths"] = paths_seen
                say(f"arm {net} {variant}{'' if bits is None else f' w{bits}'} {cpu}: "
                    f"{rec['insns_per_inference'] / 1e6:.2f} M insns per inference ({time.time() - t0:.0f} s)")
                records.append(rec)
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "qemu": plugins.version,
            "onnxruntime": ort_version(), "repeats": list(repeats), "tries": tries, "threads": 1, "batch": 1,
            "cpus": {cpu: path for cpu, path in CPUS}, "records": records}
