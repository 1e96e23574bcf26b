"""qexport.nn: quantize_ swaps the layers per the plan (first and last at 8 bits), calibrate sets
the quantizers, and to_deploy computes what the fake-quant model computes."""
import torch
from torch import nn

from qexport.convert import quantize_model
from qexport.models import build_model
from qexport.nn import calibrate, layer_plan, quant_parameters, quantize_
from qexport.nn.deploy import to_deploy
from qexport.nn.layers import QConv2d, QLinear
from qexport.quant import QuantConfig


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.a(x - 0.5)))
        x = torch.relu(self.b(x))
        return self.fc(x.mean((2, 3)))


def test_quantize_swaps_layers_first_last_8bit_and_calibrates():
    torch.manual_seed(0)
    model = quantize_(_Tiny(), QuantConfig("asq+post", bits=3))
    plan = layer_plan(_Tiny(), QuantConfig("asq+post", bits=3))
    assert plan["a"] == {"act": "lsq", "weights": "uniform", "bits": 8, "act_bits": 8}
    assert plan["b"] == {"act": "asq", "weights": "post", "bits": 3, "act_bits": 3}
    assert isinstance(model.a, QConv2d) and isinstance(model.fc, QLinear)
    calibrate(model, [torch.rand(16, 1, 8, 8)])
    assert model.a.act_quant.is_signed and not model.b.act_quant.is_signed
    assert len(quant_parameters(model)) == 6
    out = model(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_deploy_model_matches_fake_quant_model(calib):
    torch.manual_seed(0)
    model = quantize_model(build_model("small_cnn", width=16), QuantConfig("asq+post", 4), calib, 32)
    x = torch.from_numpy(calib[:8])
    with torch.no_grad():
        ref, dep = model(x), to_deploy(model)(x)
    scale = ref.abs().max()
    assert (ref - dep).abs().max() <= 1e-4 * scale  # same integers; float32 sums in another order
