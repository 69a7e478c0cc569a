import pytest
import torch
from torch import nn

from faceage.nets.attention import SpatialAttention, SqueezeExcite
from faceage.nets.model import count_macs, count_params, create_model
from faceage.nets.shufflenetv2 import InvertedResidual, ShuffleNetV2
from faceage.nets.spec import STAGE_CHANNELS

TORCHVISION_PARAMS = {0.5: 1_366_792, 1.0: 2_278_604, 1.5: 3_503_624, 2.0: 7_393_996}


@pytest.mark.parametrize("width", sorted(TORCHVISION_PARAMS))
def test_plain_backbone_matches_torchvision_parameter_count(width):
    channels = STAGE_CHANNELS[width]
    model = nn.Sequential(ShuffleNetV2(channels), nn.Linear(channels[-1], 1000))
    assert count_params(model) == TORCHVISION_PARAMS[width]


def test_squeeze_excite_matches_equation():
    torch.manual_seed(0)
    se = SqueezeExcite(16, reduction=4)
    x = torch.randn(2, 16, 5, 5)
    z = x.mean(dim=(2, 3))  # squeeze
    w1, b1 = se.fc1.weight[:, :, 0, 0], se.fc1.bias
    w2, b2 = se.fc2.weight[:, :, 0, 0], se.fc2.bias
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)  # excite
    assert se.fc1.out_channels == 8  # max(8, 16 // 4)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_spatial_attention_matches_equation():
    torch.manual_seed(0)
    sa = SpatialAttention()
    x = torch.randn(2, 6, 9, 9)
    pooled = torch.stack([x.mean(1), x.max(1).values], 1)
    m = torch.sigmoid(torch.nn.functional.conv2d(pooled, sa.conv.weight, padding=3))
    torch.testing.assert_close(sa(x), x * m)


def test_attention_unit_order_and_residual():
    torch.manual_seed(0)
    unit = InvertedResidual(16, 16, 1, attention=True).eval()
    x = torch.randn(2, 16, 6, 6)
    x1, x2 = x.chunk(2, dim=1)
    b = unit.branch2(x2)
    attended = unit.attention.spatial(unit.attention.channel(b)) + x2  # SE, then spatial, then residual
    out = torch.cat([x1, attended], 1)
    expected = out.view(2, 2, 8, 6, 6).transpose(1, 2).reshape(2, 16, 6, 6)  # channel shuffle
    torch.testing.assert_close(unit(x), expected)


def test_downsampling_unit_has_no_residual():
    unit = InvertedResidual(8, 16, 2, attention=True).eval()
    x = torch.randn(1, 8, 8, 8)
    b = unit.attention(unit.branch2(x))
    out = torch.cat([unit.branch1(x), b], 1)
    torch.testing.assert_close(unit(x), out.view(1, 2, 8, 4, 4).transpose(1, 2).reshape(1, 16, 4, 4))


@pytest.mark.parametrize("arch", ["sfv2", "ma_sfv2"])
def test_model_outputs_logits_and_regression(arch):
    model = create_model(arch, 0.5).eval()
    logits, reg = model(torch.randn(3, 3, 64, 64))
    assert logits.shape == (3, 101) and reg.shape == (3,)


def test_attention_adds_parameters_and_macs_are_counted():
    plain, ma = create_model("sfv2", 0.5), create_model("ma_sfv2", 0.5)
    assert count_params(ma) > count_params(plain)
    assert count_macs(plain, 224) > 3.5 * count_macs(plain, 112)  # conv cost grows with pixels
    assert 35e6 < count_macs(plain, 224) < 50e6  # ShuffleNetV2 0.5x is ~41M MACs at 224


def test_unknown_width_or_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown width"):
        create_model("ma_sfv2", 0.75)
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("resnet", 0.5)
