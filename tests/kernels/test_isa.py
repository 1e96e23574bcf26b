"""Kernel paths: what the library reports and QEXPORT_KERNEL_ISA (docs/ops.md, "Kernel paths")."""
from __future__ import annotations

import platform

import numpy as np
import pytest

from qexport.spec import reference as R
from qexport.runtime import KERNEL_ISA_ENV, kernel_isas, make_session

from kernel_graphs import feeds, serialize, weighted_model

X86 = ["scalar", "avx2", "avx512vnni", "amx"]
ARM = ["scalar", "neon", "dotprod"]


def _model():
    rng = np.random.default_rng(0)
    inputs = {"X": rng.integers(0, 16, size=(2, 3, 9, 9), dtype=np.uint8), "X_scale": np.ones(2, np.float32),
              "W": R.pack_codes(rng.integers(0, 8, size=4 * 3 * 9).astype(np.uint8), 4),
              "W_scale": np.ones(4, np.float32), "B": np.zeros(4, np.float32)}
    attrs = dict(bits=4, act_bits=4, act_zero_point=0, weight_shape=[4, 3, 3, 3], pads=[1, 1, 1, 1])
    return weighted_model("conv", "post", inputs, attrs), inputs


def test_kernel_isas_are_known_paths_slowest_first():
    isas = kernel_isas()
    known = X86 if platform.machine() in ("x86_64", "AMD64") else ARM
    assert isas[0] == "scalar" and len(set(isas)) == len(isas)
    assert [i for i in known if i in isas] == isas  # a subset, in the documented order


@pytest.mark.parametrize("value", ["", "auto"])
def test_unset_or_auto_is_the_fastest(value, monkeypatch):
    monkeypatch.setenv(KERNEL_ISA_ENV, value)
    model, inputs = _model()
    make_session(serialize(model)).run(None, feeds(inputs, ("W", "W_scale", "B")))


def test_unknown_path_is_refused_at_session_creation(monkeypatch):
    monkeypatch.setenv(KERNEL_ISA_ENV, "sse9")
    model, _ = _model()
    with pytest.raises(Exception, match=r"PostConv: QEXPORT_KERNEL_ISA='sse9' is not a kernel path .*available here: scalar"):
        make_session(serialize(model))


def test_path_this_cpu_lacks_is_refused(monkeypatch):
    missing = [i for i in X86 + ARM if i not in kernel_isas()]
    if not missing:
        pytest.skip("this CPU has every path")
    monkeypatch.setenv(KERNEL_ISA_ENV, missing[0])
    model, _ = _model()
    with pytest.raises(Exception, match=f"QEXPORT_KERNEL_ISA='{missing[0]}' is not available on this CPU/build"):
        make_session(serialize(model))


def test_every_path_computes_the_same_bits(monkeypatch):
    model, inputs = _model()
    outs = []
    for isa in kernel_isas():
        monkeypatch.setenv(KERNEL_ISA_ENV, isa)
        (y,) = make_session(serialize(model)).run(None, feeds(inputs, ("W", "W_scale", "B")))
        outs.append(y)
    for y in outs[1:]:
        assert np.array_equal(y.view(np.uint32), outs[0].view(np.uint32))
