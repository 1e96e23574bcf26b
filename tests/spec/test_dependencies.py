"""Dependencies run one way: the definition (qexport.spec) and the runtime side (qexport.runtime)
import no torch, so a device or a runtime-only install needs numpy and onnxruntime only."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("modules", ["qexport.spec", "qexport.runtime", "qexport.spec, qexport.runtime",
                                     "qexport.runtime.bench"])
def test_runtime_side_imports_no_torch(modules: str) -> None:
    # importing, then using the runtime (the library's op list, session options) loads no torch
    code = (f"import sys; import {modules}; import qexport.runtime as r; r.op_names(); r.session_options(); "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not bad, bad[:5]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_compatibility_name_is_the_same_module() -> None:
    import qexport.quant.reference as old
    import qexport.spec.reference as new

    assert old is new
