"""benchmarks/arm_icount.py (bench.py --arm-icount): the plugin output's parsing, the per-inference
slope and the ratio table (quick); and, marked arm, the counter itself under qemu on the small CNN.

The arm test needs a qemu-aarch64 with TCG plugins: qexport.deploy.fetch_qemu_plugins builds one
from Debian's qemu source package on first use (a few minutes, then cached; needs
libglib2.0-dev, which .ci/run installs). Like tests/deploy/test_arm.py it skips only when
QEXPORT_SKIP_ARM=1.
"""
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import arm_icount  # noqa: E402

from shared import REPO  # noqa: E402


def test_parse_count():
    assert arm_icount.parse_count("qexport-icount: insns=12345\n") == 12345
    assert arm_icount.parse_count("run 1/1: 3 ms\nqexport-icount: insns=7\n") == 7
    for bad in ("", "qexport-icount: insns=\n", "qexport-icount: insns=1\nqexport-icount: insns=2\n"):
        with pytest.raises(ValueError):
            arm_icount.parse_count(bad)


def test_per_inference_is_the_slope():
    assert arm_icount.per_inference({1: 1_000_500, 11: 1_100_500}) == pytest.approx(10_000)
    assert arm_icount.per_inference({1: 150, 3: 350, 5: 550}) == pytest.approx(100)
    with pytest.raises(ValueError):
        arm_icount.per_inference({1: 100})
    with pytest.raises(ValueError):
        arm_icount.per_inference({1: 100, 11: 100})  # no growth: not a count of inferences


def test_nonlinearity():
    assert arm_icount.nonlinearity({1: 150, 6: 650, 11: 1150}) == pytest.approx(0)
    assert arm_icount.nonlinearity({1: 150, 11: 1150}) == pytest.approx(0)
    # one run with 30 extra instructions: slope 97, line 175 / 660 / 1145, largest residual 10 (at n=6)
    assert arm_icount.nonlinearity({1: 180, 6: 650, 11: 1150}) == pytest.approx(10 / 97)


def _rec(net, cpu, variant, n, bits=None):
    path = dict(arm_icount.CPUS)[cpu] if variant == "qexport" else None
    return {"network": net, "cpu": cpu, "path": path, "variant": variant, "bits": bits, "insns_per_inference": n,
            "counts": {"1": 10 * n, "11": 20 * n}}


def test_counts_are_measured_again_until_linear():
    """A start-up anomaly that inflates the runs of one --repeat value is measured away (the lowest
    count per value kept, with its run's places); counts that stay nonlinear are an error, not a
    table entry."""
    good = {1: 156_795_361, 6: 191_306_020, 11: 225_848_213}
    bad = {1: 183_601_095, 6: 191_509_870, 11: 226_017_715}
    runs = iter([(bad, "first", {k: {"lib": v} for k, v in bad.items()}),
                 (good, "second", {k: {"lib": v} for k, v in good.items()})])
    counts, err, places = arm_icount.counts_until_linear(lambda: next(runs))
    assert counts == good and err == "first" and places == {k: {"lib": v} for k, v in good.items()}
    assert abs(arm_icount.per_inference(counts) / 1e6 - 6.905) < 0.001
    calls = []

    def always_bad():
        calls.append(1)
        return bad, "", None

    with pytest.raises(RuntimeError, match="not linear"):
        arm_icount.counts_until_linear(always_bad)
    assert len(calls) == arm_icount.ATTEMPTS


def test_ratio_rows_pair_each_qexport_model_with_ort_on_the_same_cpu():
    recs = [_rec("net", "cortex-a53", "ort_float", 400.0), _rec("net", "cortex-a53", "ort_int8", 200.0),
            _rec("net", "cortex-a76", "ort_float", 400.0), _rec("net", "cortex-a76", "ort_int8", 100.0),
            _rec("net", "cortex-a76", "qexport", 80.0, 3), _rec("net", "cortex-a53", "qexport", 150.0, 3),
            _rec("net", "cortex-a76", "qexport", 90.0, 4)]
    rows = arm_icount.ratio_rows(recs)
    assert [(r["bits"], r["cpu"]) for r in rows] == [(4, "cortex-a76"), (3, "cortex-a53"), (3, "cortex-a76")]
    a53 = rows[1]
    assert a53["path"] == "neon" and a53["qexport_vs_int8"] == pytest.approx(0.75)
    assert a53["qexport_vs_float"] == pytest.approx(0.375)
    assert rows[2]["qexport_vs_int8"] == pytest.approx(0.8)
    lines = arm_icount.markdown({"records": recs, "date": "d", "qemu": "10", "onnxruntime": "1", "repeats": [1, 11],
                                 "notes": ["* a note"]}, {"net": "Net"})
    text = "\n".join(lines)
    assert lines[0] == f"## {arm_icount.TITLE}" and "not time" in lines[0]
    assert "| Net | 3 | cortex-a53 (neon) | 0.00 | 0.00 | 0.00 | 0.75 | 0.38 |" in text
    assert "Net 3-bit 0.53x" in text and "* a note" in text  # dotprod / neon


def test_ratio_rows_without_a_baseline():
    (row,) = arm_icount.ratio_rows([_rec("net", "cortex-a76", "qexport", 80.0, 3)])
    assert row["ort_int8"] is None and row["qexport_vs_int8"] is None
    assert "| - | - | 0.00 | - | - |" in "\n".join(arm_icount.markdown(
        {"records": [_rec("net", "cortex-a76", "qexport", 80.0, 3)], "date": "d", "qemu": "10", "onnxruntime": "1",
         "repeats": [1, 11]}, {}))


STRACE = """\
9 openat(AT_FDCWD,"/d/libonnxruntime.so.1",O_RDONLY|O_CLOEXEC) = 4
9 mmap(NULL,27274720,PROT_NONE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0) = 0x00007f0000000000
9 mmap(0x00007f0000010000,2000,PROT_READ,MAP_PRIVATE|MAP_DENYWRITE|MAP_FIXED,4,0) = 0x00007f0000010000
9 mmap(0x00007f0000020000,4096,PROT_EXEC|PROT_READ,MAP_PRIVATE|MAP_DENYWRITE|MAP_FIXED,4,0x10000) = 0x00007f0000020000
9 close(4) = 0
9 openat(AT_FDCWD,"/d/libqexport_ops.so",O_RDONLY|O_CLOEXEC) = 4
9 mmap(0x00007f0000100000,8192,PROT_EXEC|PROT_READ,MAP_PRIVATE|MAP_DENYWRITE|MAP_FIXED,4,0) = 0x00007f0000100000
9 close(4) = 0
9 mmap(NULL,4096,PROT_EXEC|PROT_READ,MAP_PRIVATE|MAP_ANONYMOUS,-1,0) = 0x00007f0000200000
"""


def test_mappings_and_attribution():
    regions = arm_icount.parse_mappings(STRACE)
    assert regions == [(0x7F0000020000, 0x7F0000021000, "/d/libonnxruntime.so.1", 0x7F0000010000),
                       (0x7F0000100000, 0x7F0000102000, "/d/libqexport_ops.so", 0x7F0000100000)]
    symbols = {"libqexport_ops.so": ([0x0, 0x1000], ["qexport::{anon}::relayout", "qexport::{anon}::dot"])}
    blocks = "7f0000020010 5 2\n7f0000100400 3 1\n7f0000101004 10 7\n400000 2 3\n7f0000200000 1 1\n"
    assert arm_icount.attribute(blocks, regions, symbols) == {
        "libonnxruntime.so.1": 10, "libqexport_ops.so:qexport::{anon}::relayout": 3,
        "libqexport_ops.so:qexport::{anon}::dot": 70, "(other)": 7}
    per = arm_icount.per_inference_places({1: {"a": 10, "b": 5, "c": 4}, 3: {"a": 30, "b": 25, "c": 4, "d": 2}}, 1, 3)
    assert list(per.items()) == [("a", 10.0), ("b", 10.0), ("d", 1.0)]  # c did not grow: left out


def test_short_name():
    assert arm_icount.short_name("void qexport::(anonymous namespace)::conv_t<&qexport::(anonymous namespace)::dot, "
                                 "true, false>(qexport::ConvTask const&)") == \
        "qexport::{anon}::conv_t<&qexport::{anon}::dot, true, false>"
    assert arm_icount.short_name("qexport::quantize_portable(float const*, long)") == "qexport::quantize_portable"
    assert arm_icount.short_name("_init") == "_init"


@pytest.mark.arm
def test_counts_under_qemu_on_the_small_cnn(tmp_path, converted_sample):
    if os.environ.get("QEXPORT_SKIP_ARM") == "1":
        pytest.skip("QEXPORT_SKIP_ARM=1")
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.fail("'aarch64-linux-gnu-g++' not found: install it with `apt-get install g++-aarch64-linux-gnu`")
    from qexport.deploy import build_ops, dist_files, fetch_qemu_plugins

    model, _ = converted_sample(3)
    plugins = fetch_qemu_plugins()
    plugin = arm_icount.build_plugin(plugins.include, tmp_path / "plugin")
    build_ops("aarch64", tmp_path / "dist", source=REPO / "custom_ops", build_dir=tmp_path / "build")
    runner, ops, ort = dist_files(tmp_path / "dist", "aarch64")
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    per = {}
    for cpu, path in arm_icount.CPUS:
        counts, err, places = arm_icount.count_instructions(model, x, qemu=plugins.qemu, plugin=plugin, cpu=cpu,
                                                            runner=runner, ops=ops, ort=ort, repeats=(1, 3, 5),
                                                            trace=True, places=True, tries=2)
        assert all(c > 0 for c in counts.values())
        assert {n: sum(p.values()) for n, p in places.items()} == counts  # every block lies in one place
        per_place = arm_icount.per_inference_places(places, 1, 5)
        top = next(iter(per_place))  # the largest: qexport's dot product, found through the symbol table
        dot = "dot8" if path == "neon" else "dot"  # the 4-bit codes' 8-bit multiplies on the neon path
        assert top == f"libqexport_ops.so:qexport::{{anon}}::{dot}", list(per_place)[:5]
        assert counts[1] < counts[3] < counts[5]
        d1, d2 = counts[3] - counts[1], counts[5] - counts[3]
        assert abs(d1 - d2) <= 0.01 * d1, counts  # linear in the number of inferences
        assert f"selected={path}" in err
        per[path] = arm_icount.per_inference(counts)
        assert per[path] == pytest.approx(d1 / 2, rel=0.01)
    assert per["dotprod"] < per["neon"], per


def _fake_qemu(folder: Path, plugins: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "qemu-aarch64"
    answer = "Plugin options" if plugins else "qemu: unknown option 'plugin'"
    exe.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo "qemu-aarch64 version 10.0.13"; '
                   f'else echo "{answer}"; fi\n')
    exe.chmod(0o755)
    return exe


def test_find_qemu_plugins_from_the_environment(tmp_path, monkeypatch):
    from qexport.deploy import DeployError, find_qemu_plugins, qemu_has_plugins
    from qexport.deploy.fetch import QEMU_PLUGINS_ENV

    good = _fake_qemu(tmp_path / "good", True)
    (tmp_path / "good" / "qemu-plugin.h").write_text("/* header */\n")
    assert qemu_has_plugins(good) and not qemu_has_plugins(_fake_qemu(tmp_path / "static", False))
    (tmp_path / "static" / "qemu-plugin.h").write_text("/* header */\n")
    monkeypatch.setenv(QEMU_PLUGINS_ENV, str(tmp_path / "good"))
    found = find_qemu_plugins()
    assert found.qemu == good and found.include == tmp_path / "good" and found.version == "10.0.13"
    for bad in ("static", "nothing"):  # no -plugin; no qemu-plugin.h
        monkeypatch.setenv(QEMU_PLUGINS_ENV, str(tmp_path / bad))
        with pytest.raises(DeployError, match="plugin support"):
            find_qemu_plugins()


def test_performance_doc_is_what_bench_writes_from_its_json(tmp_path):
    """docs/performance.md is generated: bench.py rewrites it from performance.json (x86 sections and
    the ARM section alike), so the file in the repository must be exactly that output."""
    import json

    import bench

    result = json.loads((REPO / "benchmarks/results/performance.json").read_text())
    bench.write_markdown(tmp_path / "performance.md", result)
    assert (tmp_path / "performance.md").read_text() == (REPO / "docs/performance.md").read_text()
    if "arm_icount" in result:
        assert f"## {arm_icount.TITLE}" in (tmp_path / "performance.md").read_text()
