"""TernaryEncoder: the C++ forward pass against a numpy restatement of csrc/drq/ternary.h (bit for
bit, at every SIMD level and thread count), against the plain float math of the spec (close),
persistence, and input checks."""
import io

import numpy as np
import pytest

import drqindex
from drqindex import _core

LEVELS = _core.supported_simd_levels()
F32 = np.float32


@pytest.fixture(autouse=True)
def _restore_core_settings():
    level, threads = _core.simd_level(), _core.get_num_threads()
    yield
    _core.set_simd_level(level)
    _core.set_num_threads(threads)


def make_spec(dims=(784, 96, 48, 64), kinds=None, relus=None, seed=0, input_shape=None, sparsity=0.5):
    rng = np.random.default_rng(seed)
    kinds = kinds or ["ternary"] * (len(dims) - 1)
    relus = relus if relus is not None else [i < len(dims) - 2 for i in range(len(dims) - 1)]
    layers = []
    for i, (kind, relu) in enumerate(zip(kinds, relus)):
        d_in, d_out = dims[i], dims[i + 1]
        layer = {"kind": kind, "relu": relu, "scale": rng.uniform(0.5, 1.5, d_out).astype(F32),
                 "shift": rng.normal(0, 0.2, d_out).astype(F32)}
        if kind == "ternary":
            r = rng.random((d_out, d_in))
            layer.update(pos=r < sparsity / 2, neg=(r >= sparsity / 2) & (r < sparsity),
                         w_pos=float(rng.uniform(0.5, 1.5) / np.sqrt(d_in)), w_neg=float(rng.uniform(0.5, 1.5) / np.sqrt(d_in)))
        else:
            layer["weight"] = (rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)).astype(F32)
        layers.append(layer)
    d = dims[0]
    return {"version": 1, "input_shape": input_shape or (d,), "in_scale": rng.uniform(0.003, 0.005, d).astype(F32),
            "in_shift": rng.uniform(-0.6, -0.4, d).astype(F32), "layers": layers}


def _quantise(a):
    lo, hi = a.min(1, keepdims=True), a.max(1, keepdims=True)
    rng_ = hi - lo
    live = hi > lo
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(live, F32(255) / rng_, F32(0)).astype(F32)
    q = np.minimum(((a - lo) * inv + F32(0.5)).astype(np.int64), 255)
    q = np.where(live, q, 0)
    step = np.where(live, rng_ / F32(255), F32(0)).astype(F32)
    return q, lo, step


def _dot8(x, w):
    d = x.shape[1]
    stride = -(-d // 8) * 8
    xp = np.zeros((x.shape[0], stride), F32)
    xp[:, :d] = x
    wp = np.zeros((w.shape[0], stride), F32)
    wp[:, :d] = w
    lanes = np.zeros((x.shape[0], w.shape[0], 8), F32)
    for c in range(0, stride, 8):
        lanes = lanes + xp[:, None, c:c + 8] * wp[None, :, c:c + 8]
    l = lanes
    return ((l[..., 0] + l[..., 4]) + (l[..., 2] + l[..., 6])) + ((l[..., 1] + l[..., 5]) + (l[..., 3] + l[..., 7]))


def reference_embed(spec, x):
    """csrc/drq/ternary.h in numpy, float32 operation by operation."""
    a = x.reshape(x.shape[0], -1).astype(F32) * spec["in_scale"] + spec["in_shift"]
    for L in spec["layers"]:
        if L["kind"] == "ternary":
            q, lo, step = _quantise(a)
            P = (q @ L["pos"].T.astype(np.int64)).astype(F32)
            N = (q @ L["neg"].T.astype(np.int64)).astype(F32)
            sp = P * step + lo * L["pos"].sum(1).astype(F32)
            sn = N * step + lo * L["neg"].sum(1).astype(F32)
            y = (F32(L["w_pos"]) * sp - F32(L["w_neg"]) * sn) * L["scale"] + L["shift"]
        else:
            y = _dot8(a, L["weight"]) * L["scale"] + L["shift"]
        a = np.maximum(y, F32(0)) if L["relu"] else y
    return a


def float_embed(spec, x):
    """The spec's float math (no activation quantisation)."""
    a = x.reshape(x.shape[0], -1).astype(np.float64) * spec["in_scale"] + spec["in_shift"]
    for L in spec["layers"]:
        W = (L["pos"] * L["w_pos"] - L["neg"] * L["w_neg"]) if L["kind"] == "ternary" else L["weight"]
        a = (a @ W.T.astype(np.float64)) * L["scale"] + L["shift"]
        if L["relu"]:
            a = np.maximum(a, 0)
    return a


CASES = {
    "ternary3": dict(dims=(784, 96, 48, 64)),
    "mixed": dict(dims=(100, 70, 33, 16), kinds=["ternary", "float", "ternary"], relus=[True, True, False]),
    "float_only": dict(dims=(50, 40, 24), kinds=["float", "float"], relus=[True, False]),
    "no_relu": dict(dims=(130, 200, 8), relus=[False, False]),
    "wide_input": dict(dims=(2100, 8), relus=[False]),  # > 2048 inputs: the 16-bit blocks are flushed
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("level", LEVELS)
def test_embed_matches_numpy_reference_bit_for_bit(case, level):
    spec = make_spec(seed=hash(case) % 1000, **CASES[case])
    enc = drqindex.TernaryEncoder.from_spec(spec)
    rng = np.random.default_rng(5)
    d = enc.input_dim
    x_u8 = rng.integers(0, 256, (23, d), dtype=np.uint8)  # 23: 5 blocks of 4 plus a tail of 3
    x_f = rng.normal(0, 100, (9, d)).astype(F32)
    _core.set_simd_level(level)
    for x in (x_u8, x_f):
        np.testing.assert_array_equal(enc.embed(x), reference_embed(spec, x))


@pytest.mark.parametrize("level", LEVELS)
def test_batch_sizes_around_the_kernel_tiles_match_reference(level):
    # The SIMD kernels take tiles of 16 samples through look-up tables (a last partial tile of at
    # least 5 too) and fewer than 5 leftover samples through the byte kernel: full, partial and
    # tail-only tiles, 8-row output blocks with and without a remainder (d_out 43, 19, 24), table
    # groups of 6 inputs with a partial last group (43, 19) and more chunks than the 16-bit
    # accumulators hold (300 inputs: 7 chunks of 48).
    spec = make_spec(dims=(300, 43, 19, 24), seed=11)
    enc = drqindex.TernaryEncoder.from_spec(spec)
    x = np.random.default_rng(6).integers(0, 256, (77, 300), dtype=np.uint8)
    _core.set_simd_level(level)
    for n in (1, 4, 5, 11, 15, 16, 17, 20, 21, 31, 33, 45, 77):
        np.testing.assert_array_equal(enc.embed(x[:n]), reference_embed(spec, x[:n]), err_msg=f"n={n}")


def test_threads_and_batch_split_do_not_change_results():
    spec = make_spec(dims=(200, 64, 32))
    enc = drqindex.TernaryEncoder.from_spec(spec)
    x = np.random.default_rng(1).integers(0, 256, (300, 200), dtype=np.uint8)
    _core.set_num_threads(1)
    one = enc.embed(x)
    _core.set_num_threads(3)
    np.testing.assert_array_equal(enc.embed(x), one)
    np.testing.assert_array_equal(np.concatenate([enc.embed(x[:1]), enc.embed(x[1:130]), enc.embed(x[130:])]), one)
    assert enc.embed(x[:0]).shape == (0, 32)


def test_codes_agree_with_float_math_except_near_zero():
    spec = make_spec(dims=(784, 256, 128, 64), seed=3, input_shape=(28, 28))
    enc = drqindex.TernaryEncoder.from_spec(spec)
    x = np.random.default_rng(2).integers(0, 256, (200, 28, 28), dtype=np.uint8)
    exact = float_embed(spec, x)
    got = enc.embed(x)
    scale = np.abs(exact).mean()
    assert np.abs(got - exact).max() < 0.05 * scale  # the 8-bit activation error is small
    clear = np.abs(exact) > 0.05 * scale
    assert ((got > 0) == (exact > 0))[clear].all()
    assert ((got > 0) == (exact > 0)).mean() > 0.99


def test_encode_packs_lsb_first_and_prefixes():
    spec = make_spec(dims=(64, 32, 24), seed=4)
    enc = drqindex.TernaryEncoder.from_spec(spec)
    x = np.random.default_rng(3).integers(0, 256, (17, 64), dtype=np.uint8)
    logits = enc.embed(x)
    codes = enc.encode(x)
    assert codes.shape == (17, 3) and codes.dtype == np.uint8
    bits = (codes[:, np.arange(24) // 8] >> (np.arange(24) % 8)) & 1
    np.testing.assert_array_equal(bits.astype(bool), logits > 0)
    np.testing.assert_array_equal(enc.encode(x, nbits=16), codes[:, :2])
    # float32, flattened, non-contiguous: all the same codes
    np.testing.assert_array_equal(enc.encode(x.astype(F32)), codes)
    np.testing.assert_array_equal(enc.encode(np.asfortranarray(x)), codes)


def test_properties_sizes_and_spec_round_trip():
    spec = make_spec(dims=(784, 512, 256, 64), input_shape=(28, 28), kinds=["ternary", "ternary", "float"])
    enc = drqindex.TernaryEncoder.from_spec(spec)
    assert (enc.nbits, enc.input_dim, enc.input_shape, enc.code_size) == (64, 784, (28, 28), 8)
    weights = 784 * 512 + 512 * 256
    assert enc.num_parameters() == 2 * 784 + weights + 2 * 2 + 256 * 64 + 2 * (512 + 256 + 64)
    assert enc.size_bytes() == 8 * 784 + (2 * 784 * 512 + 7) // 8 + (2 * 512 * 256 + 7) // 8 + 2 * 8 \
        + 4 * 256 * 64 + 8 * (512 + 256 + 64)
    back = drqindex.TernaryEncoder.from_spec(enc.spec())
    assert back == enc
    s = enc.spec()
    s["layers"][0]["pos"][0, 0] ^= True  # spec() hands out copies
    s["layers"][0]["neg"][0, 0] = False
    assert drqindex.TernaryEncoder.from_spec(enc.spec()) == enc


def test_save_load_round_trip_and_corruption(tmp_path):
    spec = make_spec(dims=(60, 40, 16), kinds=["ternary", "float"], input_shape=(6, 10), seed=7)
    enc = drqindex.TernaryEncoder.from_spec(spec)
    path = tmp_path / "enc.drq"
    enc.save(path)
    back = drqindex.TernaryEncoder.load(path)
    assert back == enc and back.input_shape == (6, 10)
    x = np.random.default_rng(0).integers(0, 256, (5, 6, 10), dtype=np.uint8)
    np.testing.assert_array_equal(back.embed(x), enc.embed(x))
    assert drqindex.deserialize_index(drqindex.serialize_index(enc)) == enc
    import pickle
    assert pickle.loads(pickle.dumps(enc)) == enc
    data = bytearray(path.read_bytes())
    for cut in (10, 100, len(data) - 1):
        with pytest.raises(drqindex.IndexFileError):
            drqindex.TernaryEncoder.load(io.BytesIO(bytes(data[:cut])))
    for pos in (70, 200, len(data) // 2, len(data) - 40):
        bad = bytearray(data)
        bad[pos] ^= 0x55
        with pytest.raises(drqindex.IndexFileError):
            drqindex.TernaryEncoder.load(io.BytesIO(bytes(bad)))
    idx = drqindex.IndexBinaryHash(enc)
    drqindex.write_index(idx, tmp_path / "idx.drq")
    with pytest.raises(drqindex.IndexFileError, match="expected a TernaryEncoder"):
        drqindex.TernaryEncoder.load(tmp_path / "idx.drq")


def test_bad_inputs_raise_clear_errors():
    enc = drqindex.TernaryEncoder.from_spec(make_spec(dims=(784, 32, 16), input_shape=(28, 28)))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\) or \(n, 784\)"):
        enc.embed(np.zeros((3, 27, 28), np.uint8))
    with pytest.raises(ValueError, match="expected"):
        enc.embed(np.zeros((28, 28), np.uint8))
    with pytest.raises(TypeError, match="uint8 or float32"):
        enc.embed(np.zeros((3, 784), np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        enc.embed([[0] * 784])
    x = np.zeros((3, 784), F32)
    x[1, 5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        enc.embed(x)
    for nbits in (0, 12, 24, 2.0):
        with pytest.raises((ValueError, TypeError), match="nbits"):
            enc.encode(np.zeros((1, 784), np.uint8), nbits=nbits)


def test_bad_specs_raise_clear_errors():
    good = make_spec(dims=(20, 10, 8))
    cases = [
        (lambda s: s.update(version=2), "version"),
        (lambda s: s.pop("in_scale"), "missing 'in_scale'"),
        (lambda s: s.update(in_shift=np.zeros(19, F32)), "in_shift"),
        (lambda s: s["layers"][0].update(kind="conv"), "kind"),
        (lambda s: s["layers"][0].update(w_pos=-1.0), "w_pos"),
        (lambda s: s["layers"][0].update(neg=s["layers"][0]["pos"].copy()), "both true"),
        (lambda s: s["layers"][1].update(pos=np.zeros((8, 11), bool)), "pos"),
        (lambda s: s["layers"][1].update(scale=np.ones(7, F32)), "scale"),
        (lambda s: s["layers"][0].update(relu="yes"), "relu"),
        (lambda s: s.update(layers=[]), "layers"),
    ]
    for mutate, message in cases:
        spec = make_spec(dims=(20, 10, 8))
        mutate(spec)
        with pytest.raises(ValueError, match=message):
            drqindex.TernaryEncoder.from_spec(spec)
    bad_bits = make_spec(dims=(20, 10, 12))
    with pytest.raises(ValueError, match="multiple of 8"):
        drqindex.TernaryEncoder.from_spec(bad_bits)
    with pytest.raises(TypeError):
        drqindex.TernaryEncoder.from_spec([good])
