"""The public Python API (``import qexport``): the package docstring's example runs as written."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import qexport

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # converts and validates the shipped model
def test_package_docstring_example_runs(tmp_path, monkeypatch) -> None:
    code = "\n".join(line[4:] for line in re.search(r"::\n\n(.*?)\n\nNames", qexport.__doc__, re.S).group(1).splitlines())
    code = code.replace('"samples/small_cnn_float.pt"', repr(str(ROOT / "samples" / "small_cnn_float.pt")))
    code = code.replace("qexport.fit(model, teacher, x[:448])", "qexport.fit(model, teacher, x[:448], qexport.FitOptions(steps=5))")
    code = code.replace("bits=3, output=", "bits=3, fit_options=qexport.FitOptions(steps=5), output=")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "qexport docstring", "exec"), scope)  # noqa: S102 - our own docstring
    assert scope["report"].passed and scope["result"].report.passed
    assert (tmp_path / "w3.onnx").is_file()
    assert scope["report"].asq_steps  # the ASQ quantizers' per-sample steps, from ONNX Runtime


def test_every_public_name_resolves_and_is_documented() -> None:
    for name in qexport.__all__:
        value = getattr(qexport, name)
        assert name == "__version__" or (value.__doc__ and value.__doc__.strip()), name
    assert os.fspath(qexport.QuantConfig().method) == "asq+post"
