"""The model zoo: shapes, traceability, and the structure rules the exporter relies on."""
from __future__ import annotations

import json
import operator

import pytest
import torch
from torch import fx, nn

from qexport.models import MODELS, Normalize, build_model, default_arch_args
from qexport.models.common import count_macs

# name -> (arch args, input shape): small inputs keep the suite fast (resnet18 at 64x64, batch 1).
CASES = {
    "small_cnn": ({}, (2, 1, 28, 28)),
    "resnet20": ({}, (2, 3, 32, 32)),
    "resnet18": ({}, (1, 3, 64, 64)),
    "mobilenet_v2": ({"width_mult": 0.5}, (1, 3, 64, 64)),
    "mobilenet_v2_cifar": ({"width_mult": 0.5}, (2, 3, 32, 32)),
}


def test_registry_holds_the_zoo():
    assert set(CASES) <= set(MODELS)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    name = request.param
    args, shape = CASES[name]
    torch.manual_seed(0)
    return name, build_model(name, **args).eval(), torch.rand(shape)


def test_forward_shape(case):
    name, model, x = case
    out = model(x)
    assert out.shape == (x.shape[0], default_arch_args(name)["num_classes"])
    assert torch.isfinite(out).all()


def test_fx_trace_matches_eager(case):
    _, model, x = case
    gm = fx.symbolic_trace(model)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def _modules_and_graph(model: nn.Module):
    gm = fx.symbolic_trace(model)
    return dict(gm.named_modules()), gm.graph


def test_every_conv_feeds_only_its_batchnorm(case):
    _, model, _ = case
    mods, graph = _modules_and_graph(model)
    convs = [n for n in graph.nodes if n.op == "call_module" and isinstance(mods[n.target], nn.Conv2d)]
    assert convs and len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    for node in convs:
        users = list(node.users)
        assert len(users) == 1, f"{node.target} output used by {users}"
        bn = users[0]
        assert bn.op == "call_module" and isinstance(mods[bn.target], nn.BatchNorm2d), f"{node.target} -> {bn}"
        assert mods[bn.target].num_features == mods[node.target].out_channels
        assert mods[node.target].bias is None


def test_normalize_first_and_no_inplace_ops(case):
    _, model, _ = case
    mods, graph = _modules_and_graph(model)
    # fx inlines Normalize: the input's only use is ``x - normalize.mean``.
    assert isinstance(model.normalize, Normalize)
    (inp,) = [n for n in graph.nodes if n.op == "placeholder"]
    (first,) = inp.users
    assert first.target in (operator.sub, torch.sub) and first.args[1].target == "normalize.mean"
    inplace_fns = {operator.iadd, operator.imul, operator.isub, torch.relu_}
    for n in graph.nodes:
        assert not (n.op == "call_function" and n.target in inplace_fns), n
        assert not (n.op == "call_method" and n.target.endswith("_")), n
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("name", ["small_cnn", "resnet20", "mobilenet_v2_cifar"])
def test_torch_export(name):
    args, shape = CASES[name]
    model = build_model(name, **args).eval()
    x = torch.rand(shape)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), model(x))


def test_small_cnn_size():
    model = build_model("small_cnn")
    assert 10e6 <= count_macs(model, torch.rand(1, 1, 28, 28)) <= 22e6
    assert sum(p.numel() for p in model.parameters()) < 150_000  # keeps samples/small_cnn_float.pt small


def test_resnet_parameter_counts():
    # The reference counts of the published architectures.
    assert sum(p.numel() for p in build_model("resnet18").parameters()) == 11_689_512
    assert sum(p.numel() for p in build_model("resnet20").parameters()) == 272_474
    assert sum(p.numel() for p in build_model("mobilenet_v2").parameters()) == 3_504_872  # torchvision's


def test_mobilenet_v2_blocks():
    model = build_model("mobilenet_v2_cifar")
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    # 32x32 in: the stem and the second stage keep the resolution, three stride-2 stages leave 4x4
    feats = model.features(model.normalize(torch.rand(1, 3, 32, 32)))
    assert feats.shape == (1, 1280, 4, 4)
    assert sum(isinstance(m, nn.ReLU6) for m in build_model("mobilenet_v2", relu6=True).modules()) == 35
    with pytest.raises(ValueError, match="width_mult"):
        build_model("mobilenet_v2", width_mult=0)


def test_arch_args():
    for name in MODELS:
        args = default_arch_args(name)
        assert json.loads(json.dumps(args)) == args  # checkpoints store them as plain data
    model = build_model("small_cnn", width=8, num_classes=3)
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 3)
    # a 1-value mean/std broadcasts; a wrong length is an error
    assert build_model("resnet20", in_channels=1, mean=[0.5], std=[0.25])(torch.rand(1, 1, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="mean/std"):
        build_model("resnet20", in_channels=2)
    with pytest.raises(KeyError, match="unknown model"):
        build_model("no_such_net")
    with pytest.raises(TypeError, match="no argument"):
        build_model("small_cnn", depth=3)


def test_normalize_buffers_in_state_dict():
    sd = build_model("small_cnn").state_dict()
    assert torch.allclose(sd["normalize.mean"].flatten(), torch.tensor([0.286]))
    assert torch.allclose(sd["normalize.std"].flatten(), torch.tensor([0.353]))
