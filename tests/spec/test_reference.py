"""The numpy integer reference: packing, decoding, the POST table and conv/gemm against torch."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qexport.spec import reference as R


def test_post_tables_and_shift_table_identity():
    assert R.post_table(2).tolist() == [64]
    assert R.post_table(3).tolist() == [32, 45, 64]
    assert R.post_table(4).tolist() == [8, 11, 16, 23, 32, 45, 64]
    for bits in (2, 3, 4):
        table, f = R.post_table(bits), R.post_frac_bits(bits)
        for e in range(0, len(table), 2):  # even exponents are exact shifts
            assert table[e] == 1 << (f + e // 2)
        codes = np.arange(2**bits)
        values, valid = R.weight_lut("post", bits)
        a = np.arange(256)
        prods = R.post_product_shift_table(a[:, None], codes[None, valid], bits)
        assert np.array_equal(prods, a[:, None] * values[valid][None, :])


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_roundtrip_and_length(bits):
    rng = np.random.default_rng(bits)
    for count in (1, 7, 8, 9, 64, 1001):
        codes = rng.integers(0, 2**bits, size=count)
        packed = R.pack_codes(codes, bits)
        assert packed.dtype == np.uint8 and len(packed) == (count * bits + 7) // 8
        assert np.array_equal(R.unpack_codes(packed, bits, count), codes)


def test_packing_layout_is_lsb_first():
    # codes 1, 2, 3 at 3 bits: stream 100 010 110 -> byte0 = 0b11010001, byte1 = 0b0
    assert R.pack_codes(np.array([1, 2, 3]), 3).tolist() == [0b11010001, 0]


def test_decode_refuses_bad_packing():
    packed = R.pack_codes(np.array([1, 2, 3, 4, 5]), 4)
    with pytest.raises(ValueError, match="expected 3"):
        R.decode_weights(packed[:2], "post", 4, (5,))
    bad = packed.copy()
    bad[-1] |= 0xF0  # padding bits
    with pytest.raises(ValueError, match="padding"):
        R.decode_weights(bad, "post", 4, (5,))
    with pytest.raises(ValueError, match="negative zero"):
        R.decode_weights(R.pack_codes(np.array([8]), 4), "post", 4, (1,))
    with pytest.raises(ValueError, match="2..4 bits"):
        R.weight_lut("post", 5)


def test_encode_is_inverse_of_lut():
    for fmt in R.WEIGHT_FORMATS:
        for bits in R.WEIGHT_BITS[fmt]:
            values, valid = R.weight_lut(fmt, bits)
            codes = R.encode_weights(values[valid], fmt, bits)
            assert np.array_equal(R.weight_lut(fmt, bits)[0][codes], values[valid])


def _torch_conv(a, w, strides, pads, dilations, group):
    x = F.pad(torch.from_numpy(a), (pads[1], pads[3], pads[0], pads[2]))
    return F.conv2d(x, torch.from_numpy(w.astype(np.float64)), stride=strides, dilation=dilations, groups=group).numpy()


@pytest.mark.parametrize("seed", range(3 * len(R.WEIGHT_FORMATS)))
def test_qconv_accumulator_equals_float64_conv(seed):
    rng = np.random.default_rng(seed)
    fmt = R.WEIGHT_FORMATS[seed % len(R.WEIGHT_FORMATS)]
    bits = int(rng.integers(R.WEIGHT_BITS[fmt].start, R.WEIGHT_BITS[fmt].stop))
    act_bits = int(rng.integers(2, 9))
    zp = int(rng.choice([0, 2 ** (act_bits - 1)]))
    group = int(rng.choice([1, 2]))
    cg, og = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    strides = [int(v) for v in rng.integers(1, 3, 2)]
    dilations = [int(v) for v in rng.integers(1, 3, 2)]
    pads = [int(v) for v in rng.integers(0, 3, 4)]
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(5, 9)), int(rng.integers(5, 9))
    codes = rng.integers(0, 2**act_bits, size=(n, group * cg, h, w)).astype(np.uint8)
    values, valid = R.weight_lut(fmt, bits)
    w_int = rng.choice(values[valid], size=(group * og, cg, kh, kw))
    packed = R.pack_weights(w_int, fmt, bits)  # fixed-width: pack_codes of the codes (test_codecs.py)
    y, acc = R.qconv(codes, np.ones(n, np.float32), packed, np.ones(group * og, np.float32), np.zeros(group * og, np.float32),
                     fmt=fmt, bits=bits, act_bits=act_bits, act_zero_point=zp, weight_shape=w_int.shape, strides=strides,
                     pads=pads, dilations=dilations, group=group, return_acc=True)
    expect = _torch_conv(codes.astype(np.float64) - zp, w_int, strides, pads, dilations, group)
    assert np.array_equal(acc, expect.astype(np.int64))
    assert np.array_equal(y, acc.astype(np.float32))


@pytest.mark.parametrize("k, expect_dtype", [(200, np.float32), (600, np.float64)])
def test_gemm_precision_is_exact_on_both_sides_of_2_24(k, expect_dtype):
    # 8-bit codes 255 x weights 127: a dot product of 200 stays below 2^24 (float32 GEMM), one of
    # 600 does not (float64). Odd values make float32 rounding visible if it were used beyond 2^24.
    rng = np.random.default_rng(k)
    w_int = rng.choice(np.array([127, -127, 125, 123]), size=(3, k))
    codes = np.full((2, k), 255, np.uint8)
    codes[1, ::7] = 1
    assert R._gemm_dtype(8, 0, w_int) is expect_dtype
    packed = R.pack_weights(w_int, "uniform", 8)
    _, acc = R.qgemm(codes, np.ones(2, np.float32), packed, np.ones(3, np.float32), np.zeros(3, np.float32), fmt="uniform",
                     bits=8, act_bits=8, act_zero_point=0, weight_shape=w_int.shape, return_acc=True)
    assert np.array_equal(acc, codes.astype(np.int64) @ w_int.T.astype(np.int64))
    conv_codes = codes.reshape(2, k, 1, 1)
    _, acc_conv = R.qconv(conv_codes, np.ones(2, np.float32), packed, np.ones(3, np.float32), np.zeros(3, np.float32),
                          fmt="uniform", bits=8, act_bits=8, act_zero_point=0, weight_shape=(3, k, 1, 1), return_acc=True)
    assert np.array_equal(acc_conv.reshape(2, 3), acc)


def test_epilogue_order_and_relu():
    codes = np.array([[3, 0], [1, 2]], dtype=np.uint8)
    w = R.pack_codes(R.encode_weights(np.array([[1, -2], [3, 1]]), "uniform", 4), 4)
    xs, ws, b = np.array([0.5, 0.25], np.float32), np.array([0.1, 0.3], np.float32), np.array([0.05, -2.0], np.float32)
    y = R.qgemm(codes, xs, w, ws, b, fmt="uniform", bits=4, act_bits=2, act_zero_point=0, weight_shape=(2, 2), relu=True)
    acc = np.array([[3, 9], [-3, 5]])
    expect = acc.astype(np.float32) * (xs[:, None] * ws[None, :]) + b[None, :]
    assert np.array_equal(y, np.where(expect < 0, np.float32(0), expect))


def test_quantize_rounding_nan_and_saturation():
    x = np.array([[0.5, 1.5, 2.5, -0.5, np.nan, np.inf, -np.inf, 100.0]], dtype=np.float32)
    codes, scale = R.lsq_quantize(x, 1.0, 3, True)  # signed 3-bit: q in [-4, 3], zp 4
    assert (codes.astype(int) - 4).tolist() == [[0, 2, 2, 0, 0, 3, -4, 3]]
    assert scale.tolist() == [1.0]
    with pytest.raises(ValueError, match="step"):
        R.lsq_quantize(x, 0.0, 3, True)


def test_asq_scale_is_step_at_zero_adapter_and_order_defined():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 4, 4)).astype(np.float32)
    w1 = rng.normal(size=(2, 5)).astype(np.float32)
    scale = R.asq_scale(x, w1, np.zeros(2, np.float32), np.zeros((1, 2), np.float32), np.zeros(1, np.float32), 0.25)
    assert scale.tolist() == [0.25] * 3
    w2 = rng.normal(size=(1, 2)).astype(np.float32)
    b1 = rng.normal(size=2).astype(np.float32)
    got = R.asq_scale(x, w1, b1, w2, np.array([0.3], np.float32), 0.25)
    pooled = x.astype(np.float64).reshape(3, 5, -1).mean(2)
    h = np.maximum(pooled @ w1.T.astype(np.float64) + b1, 0)
    z = h @ w2[0].astype(np.float64) + 0.3
    assert np.allclose(got, 0.25 * 2 / (1 + np.exp(-z)), rtol=1e-6)
    with pytest.raises(ValueError, match="W1 must be"):
        R.asq_scale(x, w1[:, :4], b1, w2, np.zeros(1), 0.25)


def test_accumulator_bound_examples_from_docs():
    assert R.accumulator_bound("post", 4, 4, 0, 2_236_962) <= R.INT32_MAX < R.accumulator_bound("post", 4, 4, 0, 2_236_963)
    assert R.accumulator_bound("uniform", 8, 8, 128, 131_071) <= R.INT32_MAX < R.accumulator_bound("uniform", 8, 8, 128, 131_072)


def _lane_mean(values) -> float:
    """The definition of docs/ops.md (AsqQuantize step 1), written out one addition at a time."""
    lanes = [0.0] * 8
    padded = list(values) + [0.0] * (-len(values) % 8)
    for i, v in enumerate(padded):
        lanes[i % 8] = lanes[i % 8] + float(v)
    t = [lanes[k] + lanes[k + 4] for k in range(4)]
    return ((t[0] + t[2]) + (t[1] + t[3])) / len(values)


@pytest.mark.parametrize("plane", [1, 5, 8, 13, 16, 64, 99, 777, 12544])  # 12544: 112x112, beyond numpy's 8192-element buffers
def test_spatial_mean_is_the_8_lane_sum(plane):
    rng = np.random.default_rng(plane)
    x = (rng.standard_normal((2, 3, plane)) * 10.0 ** rng.integers(-20, 20, size=(2, 3, plane))).astype(np.float32)
    got = R.spatial_mean(x)
    want = np.array([[_lane_mean(x[n, c]) for c in range(3)] for n in range(2)])
    np.testing.assert_array_equal(got, want)


def test_spatial_mean_order_matters():
    # 1e20, 1, -1e20: one running sum loses the 1; the lanes keep it (so the order is tested).
    x = np.array([[[1e20, 1.0, -1e20]]], np.float32)
    assert R.spatial_mean(x)[0, 0] == 1.0 / 3.0
    assert np.cumsum(x.astype(np.float64), axis=2)[0, 0, -1] == 0.0


# --------------------------------------------------------------------------- ASQ adapter: groups, beta maps
def _sequential_group_mean(values) -> float:
    """A group's mean as defined (AsqQuantize step 2): one float64 addition at a time from +0.0,
    channels in order, then one division by the group's size."""
    acc = 0.0
    for v in values:
        acc = acc + float(v)
    return acc / len(values)


def test_adapter_group_bounds():
    assert R.adapter_group_bounds(7, 3).tolist() == [0, 2, 4, 7]  # floor(g C / G): sizes 2, 2, 3
    assert R.adapter_group_bounds(10, 4).tolist() == [0, 2, 5, 7, 10]
    assert R.adapter_group_bounds(5, 1).tolist() == [0, 5]
    assert R.adapter_group_bounds(5, 0).tolist() == R.adapter_group_bounds(5, 5).tolist() == list(range(6))
    for c, g in ((3, 4), (3, -1), (0, 0), (0, 1)):
        with pytest.raises(ValueError, match="groups must be in"):
            R.adapter_group_bounds(c, g)


def test_group_means_are_sequential_sums_in_channel_order():
    # C = 6, G = 2: groups [0, 3) and [3, 6). 1e20, 1, -1e20 sum to 0 in the defined order (the 1
    # is lost in 1e20 + 1) but to 1 exactly (math.fsum) or largest first, so the bits pin the order.
    big = 1e20
    pooled = np.array([[big, 1.0, -big, 1.0, big, -big],
                       [big, -big, 1.0, -big, big, 1.0],
                       [0.1, 0.2, 0.3, 3.0, -0.5, 7.25]])
    got = R.adapter_inputs(pooled, 2)
    want = np.array([[_sequential_group_mean(row[:3]), _sequential_group_mean(row[3:])] for row in pooled])
    np.testing.assert_array_equal(got, want)
    assert got[0].tolist() == [0.0, 0.0] and got[1].tolist() == [1.0 / 3.0, 1.0 / 3.0]
    for group in (pooled[0, :3], pooled[0, 3:]):  # other orders give other bits
        assert math.fsum(group) / 3 == 1.0 / 3.0
        assert _sequential_group_mean(sorted(group, key=abs, reverse=True)) == 1.0 / 3.0
    # Divided once by the group's size, not a sum of c / size terms.
    assert got[2, 0] == ((0.1 + 0.2) + 0.3) / 3 != (0.1 / 3 + 0.2 / 3) + 0.3 / 3
    # Uneven groups (C = 7, G = 3: sizes 2, 2, 3) and G = C (or 0): the spatial means themselves.
    p7 = np.arange(14, dtype=np.float64).reshape(2, 7) * 0.1
    np.testing.assert_array_equal(R.adapter_inputs(p7, 3), [[_sequential_group_mean(r[0:2]), _sequential_group_mean(r[2:4]),
                                                            _sequential_group_mean(r[4:7])] for r in p7])
    assert R.adapter_inputs(p7, 7) is p7 and R.adapter_inputs(p7, 0) is p7


def test_asq_scale_with_groups_follows_the_definition():
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(3, 7, 2, 3)) * 10.0 ** rng.integers(-3, 4, size=(3, 7, 1, 1))).astype(np.float32)
    w1, b1 = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    w2, b2 = rng.normal(size=(1, 4)).astype(np.float32), np.array([0.7], np.float32)
    step = np.float32(0.3)
    for beta_map in R.BETA_MAPS:
        got = R.asq_scale(x, w1, b1, w2, b2, float(step), beta_map, 3)
        for n in range(3):
            p = [_lane_mean(x[n, c].reshape(-1)) for c in range(7)]
            g = [_sequential_group_mean(p[lo:hi]) for lo, hi in ((0, 2), (2, 4), (4, 7))]
            z = 0.0
            for j in range(4):
                h = 0.0
                for k in range(3):
                    h = h + float(w1[j, k]) * g[k]
                h = h + float(b1[j])
                z = z + float(w2[0, j]) * (h if h > 0.0 else 0.0)
            z = z + float(b2[0])
            beta = max(z, 1e-8) if beta_map == "relu" else 2.0 / (1.0 + np.exp(-z))
            assert got[n] == np.float32(float(step) * beta), (beta_map, n)
    with pytest.raises(ValueError, match=r"W1 must be \(H, 3\)"):
        R.asq_scale(x, w1[:, :2], b1, w2, b2, 0.3, "relu", 3)
    with pytest.raises(ValueError, match="groups must be in"):
        R.asq_scale(x, np.ones((4, 8), np.float32), b1, w2, b2, 0.3, "relu", 8)
    with pytest.raises(ValueError, match="no channels"):
        R.asq_scale(np.ones((2, 0, 3), np.float32), np.ones((4, 0), np.float32), b1, w2, b2, 0.3)


def test_beta_maps():
    assert R.BETA_MAPS == ("relu", "sigmoid2")
    below = np.nextafter(1e-8, 0.0)
    z = np.array([2.0, 1e-8, np.nextafter(1e-8, 1.0), below, 0.0, -0.0, -5.0, np.nan, np.inf, -np.inf])
    relu = R.beta_from_z(z, "relu")
    assert relu.dtype == np.float64
    assert relu.tolist() == [2.0, 1e-8, float(np.nextafter(1e-8, 1.0)), 1e-8, 1e-8, 1e-8, 1e-8, 1e-8, np.inf, 1e-8]
    sig = R.beta_from_z(np.array([0.0, np.inf, -np.inf, -1000.0, 1000.0, np.nan]), "sigmoid2")
    assert sig[:5].tolist() == [1.0, 2.0, 0.0, 0.0, 2.0] and np.isnan(sig[5])
    assert R.beta_from_z(np.array([1.5]), "sigmoid2")[0] == 2.0 / (1.0 + np.exp(-1.5))
    for bad in ("", "RELU", "sigmoid", "none"):
        with pytest.raises(ValueError, match="beta_map must be one of"):
            R.beta_from_z(z, bad)


def test_asq_scale_beta_map_default_is_sigmoid2_and_relu_floor():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    w1, b1 = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    w2, b2 = rng.normal(size=(1, 3)).astype(np.float32), rng.normal(size=1).astype(np.float32)
    default = R.asq_scale(x, w1, b1, w2, b2, 0.25)
    np.testing.assert_array_equal(default, R.asq_scale(x, w1, b1, w2, b2, 0.25, "sigmoid2", 0))
    codes, scale = R.asq_quantize(x, w1, b1, w2, b2, 0.25, 4, False)
    np.testing.assert_array_equal(scale, default)
    assert not np.array_equal(default, R.asq_scale(x, w1, b1, w2, b2, 0.25, "relu", 0))
    # A zero adapter: z = 0, beta = 1 (sigmoid2) or the floor 1e-8 (relu).
    zeros = (np.zeros((3, 5), np.float32), np.zeros(3, np.float32), np.zeros((1, 3), np.float32), np.zeros(1, np.float32))
    assert R.asq_scale(x, *zeros, 0.25).tolist() == [0.25] * 4
    assert R.asq_scale(x, *zeros, 0.25, "relu").tolist() == [float(np.float32(0.25 * 1e-8))] * 4
    with pytest.raises(ValueError, match="beta_map must be one of"):
        R.asq_scale(x, w1, b1, w2, b2, 0.25, "Relu")


@pytest.mark.parametrize("seed", range(6))
def test_depthwise_qconv_equals_float64_conv(seed):
    """The depthwise path (one input and one output channel per group) against torch's conv."""
    rng = np.random.default_rng(100 + seed)
    fmt = R.WEIGHT_FORMATS[seed % len(R.WEIGHT_FORMATS)]
    bits = int(rng.integers(R.WEIGHT_BITS[fmt].start, R.WEIGHT_BITS[fmt].stop))
    act_bits, zp = (8, 0) if seed % 2 else (4, 8)
    c, k = 6, int(rng.integers(1, 6))
    strides, dilations = [int(v) for v in rng.integers(1, 3, 2)], [int(v) for v in rng.integers(1, 3, 2)]
    pads = [int(v) for v in rng.integers(0, 3, 4)]
    codes = rng.integers(0, 2**act_bits, size=(2, c, 9, 11)).astype(np.uint8)
    values, valid = R.weight_lut(fmt, bits)
    w_int = rng.choice(values[valid], size=(c, 1, k, k))
    _, acc = R.qconv(codes, np.ones(2, np.float32), R.pack_weights(w_int, fmt, bits), np.ones(c, np.float32),
                     np.zeros(c, np.float32), fmt=fmt, bits=bits, act_bits=act_bits, act_zero_point=zp,
                     weight_shape=w_int.shape, strides=strides, pads=pads, dilations=dilations, group=c, return_acc=True)
    expect = _torch_conv(codes.astype(np.float64) - zp, w_int, strides, pads, dilations, c)
    assert np.array_equal(acc, expect.astype(np.int64))


def test_decoded_weights_are_remembered_but_never_stale():
    rng = np.random.default_rng(7)
    w_int = rng.choice(R.weight_lut("post", 3)[0][R.weight_lut("post", 3)[1]], size=(4, 10))
    packed = R.pack_weights(w_int, "post", 3)
    assert np.array_equal(R.decode_weights(packed, "post", 3, w_int.shape), w_int)
    view = packed.view()  # a new array object on the same bytes: served from the cache
    assert np.array_equal(R.decode_weights(view, "post", 3, w_int.shape), w_int)
    other = R.pack_weights(-w_int, "post", 3)
    packed[:] = other  # changed in place: decoded again
    assert np.array_equal(R.decode_weights(packed, "post", 3, w_int.shape), -w_int)
    out = R.decode_weights(packed, "post", 3, w_int.shape)
    out[:] = 0  # a caller's copy: the cache is not affected
    assert np.array_equal(R.decode_weights(packed, "post", 3, w_int.shape), -w_int)
