"""The command line as a user meets it: convert the shipped sample, validate, and bad inputs."""
import json
import os
import pickle
import re

import numpy as np
import onnx
import pytest
import torch

from qexport.export import OPS
from qexport.models import build_model
from qexport.runtime import make_session
from qexport.spec import reference as R
from shared import CHANCE, SAMPLE_MODEL
from shared import run_cli as run


@pytest.mark.parametrize("cmd", [[], ["convert"], ["train"], ["validate"], ["models"], ["library"]])
def test_help_everywhere(cmd):
    code, out = run(*cmd, "--help")
    assert code == 0 and "Usage" in out


@pytest.mark.parametrize("bits", [3, 4])
def test_convert_sample_writes_custom_op_model_with_parity(converted_sample, samples, bits):
    path, text = converted_sample(bits)
    assert "parity: PASS" in text
    report = json.loads(path.with_suffix(".parity.json").read_text())
    assert report["passed"] and report["samples"] == 512
    assert all(layer["mismatches"] == 0 for layer in report["layers"])
    assert all(layer["weight_mismatches"] == 0 for layer in report["layers"])
    assert report["vs_deploy"]["top1_agreement"] == 1.0
    post = [layer for layer in report["layers"] if layer["weights"] == "post"]
    assert post and all(layer["bits"] == bits for layer in post)

    model = onnx.load(str(path))
    custom = [n for n in model.graph.node if n.domain == R.DOMAIN]
    # each conv carries its ReLU and the next layer's quantizer (export fusion, docs/ops.md)
    assert {n.op_type for n in custom} >= {"LsqQuantize", "QConvFused", "QConv", "GlobalAvgPool", "QGemm"}
    assert {n.op_type for n in custom} <= set(OPS) and not any(OPS[n.op_type].legacy for n in custom)
    # the weight format is data (the codec name), the first and last layers 8-bit uniform, the rest post
    formats = {onnx.helper.get_attribute_value(a).decode() for n in custom for a in n.attribute if a.name == "format"}
    assert formats == {"uniform", "post"}
    # a plain onnxruntime session with the shipped library runs it, and it classifies
    x, y = samples
    logits = make_session(str(path)).run(None, {"input": x})[0]
    assert logits.shape == (512, 10) and np.isfinite(logits).all()
    assert (logits.argmax(1) == y).mean() > 0.8  # the float model: about 0.9 on these samples


def _tamper(path, tmp_path, change):
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type in ("QConv", "QConvFused")
                and any(a.name == "format" and a.s == b"post" for a in n.attribute))
    init = next(i for i in model.graph.initializer if i.name == node.input[2])
    init.CopyFrom(onnx.numpy_helper.from_array(change(onnx.numpy_helper.to_array(init).copy()), init.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(model, str(bad))
    return bad


def test_validate_passes_then_fails_on_a_tampered_file(converted_sample, tmp_path):
    path, _ = converted_sample(4)
    ckpt = path.with_suffix(".pt")
    code, text = run("validate", ckpt, path, "--limit", 128)
    assert code == 0, text
    assert "parity: PASS" in text
    # valid codes in the wrong places: ONNX Runtime runs it, validate catches it
    code, text = run("validate", ckpt, _tamper(path, tmp_path, lambda p: np.roll(p, 1)), "--limit", 64)
    assert code == 1, text
    assert "parity: FAIL" in text and "packed weight codes differ" in text and "activation codes differ" in text
    # a negative-zero POST code: not a valid file at all
    def negative_zero(p):
        p[0] = 0x88
        return p
    code, text = run("validate", ckpt, _tamper(path, tmp_path, negative_zero), "--limit", 64)
    assert code == 1, text
    assert "packed weights are invalid" in text and "negative zero" in text


def test_validate_refuses_a_float_model_and_a_broken_onnx(converted_sample, tmp_path):
    path, _ = converted_sample(3)
    code, text = run("validate", SAMPLE_MODEL, path)
    assert code == 2 and "float model" in text
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage" * 10)
    code, text = run("validate", path.with_suffix(".pt"), junk)
    assert code == 2 and "not a valid ONNX model" in text


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    data = SAMPLE_MODEL.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    code, text = run("convert", bad, "--bits", 3, "-o", tmp_path / "x.onnx")
    assert code == 2 and "truncated or corrupt" in text
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("payload,expect", [
    (b"", "empty"),
    (b"not a torch file at all" * 3, "cannot be read|not a readable|truncated or corrupt"),
])
def test_non_torch_files_are_clear_errors(tmp_path, payload, expect):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(payload)
    code, text = run("convert", bad, "-o", tmp_path / "x.onnx")
    assert code == 2
    assert re.search(expect, text), text


def test_non_qexport_torch_file_and_state_dict_without_arch(tmp_path):
    other = tmp_path / "list.pt"
    torch.save([1, 2, 3], other)
    code, text = run("convert", other, "-o", tmp_path / "x.onnx")
    assert code == 2 and "neither a qexport checkpoint nor a state dict" in text
    sd = tmp_path / "sd.pt"
    torch.save(build_model("small_cnn").state_dict(), sd)
    code, text = run("convert", sd, "-o", tmp_path / "x.onnx")
    assert code == 2 and "--arch" in text
    code, text = run("convert", sd, "--arch", "resnet20", "-o", tmp_path / "x.onnx")
    assert code == 2 and "do not fit" in text


def test_state_dict_with_arch_args_converts(tmp_path):
    """A zoo architecture built with other arguments (width 8): without --arch-args the mismatch
    is refused with its detail; with them, convert runs."""
    sd = tmp_path / "sd8.pt"
    torch.save(build_model("small_cnn", width=8).state_dict(), sd)
    code, text = run("convert", sd, "--arch", "small_cnn", "-o", tmp_path / "x.onnx")
    assert code == 2 and "do not fit" in text and not (tmp_path / "x.onnx").exists()
    code, text = run("convert", sd, "--arch", "small_cnn", "--arch-args", "[8]", "-o", tmp_path / "x.onnx")
    assert code == 2 and "--arch-args must be a JSON object" in text
    code, text = run("convert", sd, "--arch", "small_cnn", "--arch-args", '{"width": 8}', "--bits", 4, "--limit", 96,
                     "--fit-steps", 2, "-o", tmp_path / "w8.onnx")
    assert code == 0 and "parity: PASS" in text, text


@pytest.mark.slow
def test_state_dict_with_arch_converts(tmp_path):
    sd = tmp_path / "sd.pt"
    torch.save(torch.load(SAMPLE_MODEL, weights_only=True)["state_dict"], sd)
    code, text = run("convert", sd, "--arch", "small_cnn", "--bits", 4, "--limit", 128, "-o", tmp_path / "sd.onnx")
    assert code == 0, text
    assert "parity: PASS" in text


@pytest.mark.slow
def test_pickled_module_needs_trust_pickle(tmp_path):
    pickled = tmp_path / "module.pt"
    torch.save(build_model("small_cnn").eval(), pickled)
    code, text = run("convert", pickled, "-o", tmp_path / "m.onnx", "--limit", 64)
    assert code == 2 and "--trust-pickle" in text and "arbitrary code" in text
    assert not (tmp_path / "m.onnx").exists()
    code, text = run("convert", pickled, "--trust-pickle", "--bits", 3, "--limit", 64, "-o", tmp_path / "m.onnx")
    assert code == 0, text


class _Payload:
    """Unpickling this would create a marker file: proof that code from the file ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "qexport.checkpoint", "version": 1, "state_dict": _Payload(str(marker))}, evil)
    legacy = tmp_path / "evil_legacy.pt"
    legacy.write_bytes(pickle.dumps(_Payload(str(marker))))
    for path in (evil, legacy):
        code, text = run("convert", path, "-o", tmp_path / "x.onnx")
        assert code == 2 and "--trust-pickle" in text, text
        code, text = run("validate", path, tmp_path / "x.onnx")
        assert code == 2
    assert not marker.exists()


def test_post_bits_out_of_range_and_wrong_data(tmp_path):
    code, text = run("convert", SAMPLE_MODEL, "--bits", 6, "-o", tmp_path / "x.onnx")
    assert code == 2 and "2..4 bits" in text
    npz = tmp_path / "rgb.npz"
    np.savez(npz, x=np.zeros((4, 3, 32, 32), np.float32))
    code, text = run("convert", SAMPLE_MODEL, "--data", npz, "-o", tmp_path / "x.onnx")
    assert code == 2 and "input shape" in text


@pytest.mark.slow
def test_train_then_convert_a_qat_checkpoint(tmp_path):
    ckpt = tmp_path / "qat.pt"
    code, text = run("train", "--from", SAMPLE_MODEL, "--method", "asq+post", "--bits", 3, "--epochs", 1,
                     "--limit-train", 256, "--limit-test", 128, "--no-progress", "-o", ckpt)
    assert code == 0, text
    final = re.search(r"wrote .*: test top-1 ([\d.]+)%", text)
    assert final and float(final.group(1)) > 7 * CHANCE, text  # 3-bit QAT of the shipped model keeps it good
    code, text = run("convert", ckpt, "--bits", 4, "-o", tmp_path / "q.onnx")
    assert code == 2 and "already quantized" in text  # its own config is kept; a conflicting one is refused
    code, text = run("convert", ckpt, "--limit", 128, "-o", tmp_path / "q.onnx")
    assert code == 0, text
    assert "parity: PASS" in text and not (tmp_path / "q.pt").exists()  # nothing re-calibrated, nothing re-saved
