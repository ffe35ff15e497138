"""Deep Transfer Hashing trainer (drqindex.train.hashing) and the Hamming-ranking metrics.

Tiny synthetic 28x28 "images" (class templates plus noise), small networks, one thread: seconds."""
import numpy as np
import pytest

import drqindex

from drqindex.data import hamming_distances, hamming_ranking_metrics, mean_average_precision, precision_at

torch = pytest.importorskip("torch")

from drqindex.train import HashStudent, HashTeacher  # noqa: E402
from drqindex.train.hashing import _TTQFunction, augment_images, augmented_views, pack_bits  # noqa: E402

N_CLASSES = 6


def _images(n, seed, noise=60.0):
    """uint8 (n, 28, 28) images: one random template per class (fixed) plus per-image noise."""
    templates = np.random.default_rng(99).uniform(0, 255, (N_CLASSES, 28, 28))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = 0.5 * templates[y] + rng.normal(64.0, noise, (n, 28, 28))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    xt, yt = _images(600, seed=1)
    xq, yq = _images(200, seed=2)
    return xt, yt, xq, yq


def _student(**kw):
    base = dict(nbits=32, hidden=(64, 32), prefixes=(8, 16, 32), epochs=4, batch_size=64, lr=3e-3, lr_final=1e-3,
                num_threads=1, seed=0)
    base.update(kw)
    return HashStudent(**base)


def _teacher(**kw):
    base = dict(nbits=32, prefixes=(8, 16, 32), epochs=8, batch_size=64, lr=1e-2, lr_final=3e-3, channels=(4, 8), fc=32,
                num_threads=1, seed=0)
    base.update(kw)
    return HashTeacher(**base)


@pytest.fixture(scope="module")
def float_student(data):
    xt, yt, _, _ = data
    return _student(ternary=False).fit(xt, yt)


@pytest.fixture(scope="module")
def ternary_student(data):
    xt, yt, _, _ = data
    return _student(ternary=True).fit(xt, yt)


@pytest.fixture(scope="module")
def teacher(data):
    xt, yt, _, _ = data
    return _teacher().fit(xt, yt)


def _map(model, data, nbits):
    xt, yt, xq, yq = data
    return mean_average_precision(model.encode(xq), yq, model.encode(xt), yt, nbits)


# --------------------------------------------------------------------------- training quality
@pytest.mark.parametrize("which", ["float_student", "ternary_student", "teacher"])
def test_loss_decreases_and_codes_beat_random(which, data, request):
    model = request.getfixturevalue(which)
    xt, yt, xq, yq = data
    losses = [h["loss"] for h in model.history_]
    assert losses[-1] < losses[0]
    rng = np.random.default_rng(0)
    rand_map = mean_average_precision(rng.integers(0, 256, (200, 4), dtype=np.uint8), yq,
                                      rng.integers(0, 256, (600, 4), dtype=np.uint8), yt, 32)
    trained = _map(model, data, 32)
    assert rand_map < 0.3
    assert trained > rand_map + 0.4, (trained, rand_map)


def test_prefix_bits_are_codes_on_their_own(float_student, data):
    # bits [0, 8) were trained as an 8-bit code: the 8-bit prefix alone must separate 6 classes well
    assert _map(float_student, data, 8) > 0.8
    assert _map(float_student, data, 16) > 0.8
    codes = float_student.encode(data[2])
    np.testing.assert_array_equal(float_student.encode(data[2], nbits=16), codes[:, :2])


# --------------------------------------------------------------------------- TTQ
def test_ttq_layers_are_ternary_with_threshold(ternary_student):
    layers = ternary_student.ternary_layers()
    assert len(layers) == 3  # every FC layer, the hash layer included
    for layer in layers:
        with torch.no_grad():
            wt = layer.ternary_weight().numpy()
            w = layer.weight.numpy()
            delta = 0.05 * np.abs(w).max()
            wp, wn = float(layer.wp), float(layer.wn)
        assert wp > 0 and wn > 0
        assert set(np.unique(wt).tolist()) == {np.float32(-wn), 0.0, np.float32(wp)}
        np.testing.assert_array_equal(wt == np.float32(wp), w > delta)
        np.testing.assert_array_equal(wt == np.float32(-wn), w < -delta)
        np.testing.assert_array_equal(wt == 0, np.abs(w) <= delta)


def test_ttq_straight_through_gradients():
    w = torch.tensor([[0.9, -0.8, 0.01], [-0.02, 0.5, -1.0]], requires_grad=True)
    wp = torch.tensor(1.5, requires_grad=True)
    wn = torch.tensor(0.7, requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = _TTQFunction.apply(w, wp, wn, torch.tensor(0.05))
    np.testing.assert_allclose(out.detach().numpy(), [[1.5, -0.7, 0.0], [0.0, 1.5, -0.7]], rtol=1e-6)
    out.backward(g)
    # latent weights: x Wp in the positive region, x Wn in the negative one, x 1 in the zero region
    np.testing.assert_allclose(w.grad.numpy(), [[1.5, 2 * 0.7, 3.0], [4.0, 5 * 1.5, 6 * 0.7]], rtol=1e-6)
    assert float(wp.grad) == pytest.approx(1.0 + 5.0)      # sum over the positive region
    assert float(wn.grad) == pytest.approx(-(2.0 + 6.0))   # d(-Wn)/dWn = -1 over the negative region


def test_sizes(ternary_student, float_student):
    shapes = [(64, 784), (32, 64), (32, 32)]
    weights = sum(o * i for o, i in shapes)
    scalars = sum(2 * o for o, _ in shapes)
    assert float_student.num_parameters() == weights + scalars
    assert ternary_student.num_parameters() == weights + scalars + 2 * 3
    assert float_student.fc_size_bytes() == 4 * (weights + scalars)
    assert ternary_student.fc_size_bytes() == sum(-(-2 * o * i // 8) for o, i in shapes) + 4 * (scalars + 6)
    assert ternary_student.fc_size_bytes(ternary=False) == float_student.fc_size_bytes()
    assert float_student.fc_size_bytes() / ternary_student.fc_size_bytes() > 12


# --------------------------------------------------------------------------- export spec
def _spec_forward(spec, x):
    """The contract's math (TERNARY_ENCODER_SPEC.md), in float64 numpy."""
    h = x.reshape(x.shape[0], -1).astype(np.float64) * spec["in_scale"] + spec["in_shift"]
    for layer in spec["layers"]:
        if layer["kind"] == "ternary":
            assert not (layer["pos"] & layer["neg"]).any()
            assert layer["w_pos"] >= 0 and layer["w_neg"] >= 0
            y = layer["w_pos"] * (h @ layer["pos"].T.astype(np.float64)) \
                - layer["w_neg"] * (h @ layer["neg"].T.astype(np.float64))
        else:
            y = h @ layer["weight"].T.astype(np.float64)
        h = y * layer["scale"] + layer["shift"]
        if layer["relu"]:
            h = np.maximum(h, 0.0)
    return h


@pytest.mark.parametrize("which", ["float_student", "ternary_student"])
def test_export_spec_matches_torch(which, data, request):
    model = request.getfixturevalue(which)
    xq = data[2]
    spec = model.export_spec()
    assert spec["version"] == 1 and tuple(spec["input_shape"]) == (28, 28)
    kinds = {layer["kind"] for layer in spec["layers"]}
    assert kinds == ({"ternary"} if which == "ternary_student" else {"float"})
    assert [layer["relu"] for layer in spec["layers"]] == [True, True, False]
    for layer in spec["layers"]:
        assert layer["scale"].dtype == np.float32 and layer["shift"].dtype == np.float32
        if layer["kind"] == "ternary":
            assert layer["pos"].dtype == np.bool_ and layer["neg"].dtype == np.bool_
    ref = _spec_forward(spec, xq)
    got = model.embed(xq)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    codes_ref = pack_bits(ref)
    codes = model.encode(xq)
    bits = np.unpackbits(codes, axis=1, bitorder="little") != np.unpackbits(codes_ref, axis=1, bitorder="little")
    assert not bits[np.abs(ref) >= 1e-4].any()
    # flattened and (n, 28, 28), uint8 and float32 inputs give the same logits
    np.testing.assert_array_equal(model.embed(xq.reshape(len(xq), -1).astype(np.float32)), got)


def test_export_wraps_ternary_encoder_when_available(ternary_student, data):
    enc = ternary_student.export()
    assert isinstance(enc, drqindex.TernaryEncoder)
    xq = data[2]
    # The C++ encoder runs each ternary layer on int8-quantised activations (csrc/drq/ternary.h), so
    # its logits are close to, not equal to, the float math: within 1% of the typical logit, and the
    # same code bits wherever the logit is not tiny.
    ours, torch_logits = enc.embed(xq), ternary_student.embed(xq)
    scale = np.abs(torch_logits).mean()
    assert np.abs(ours - torch_logits).max() < 0.01 * scale
    clear = np.abs(torch_logits) > 0.02 * scale
    np.testing.assert_array_equal((ours > 0)[clear], (torch_logits > 0)[clear])
    bits = np.unpackbits(enc.encode(xq), axis=1, bitorder="little").astype(bool)
    assert (bits == (torch_logits > 0)).mean() > 0.99


def test_codes_are_lsb_first():
    logits = np.array([[1.0, -1.0, 1.0] + [-1.0] * 5 + [-1.0] * 7 + [2.0]], dtype=np.float32)
    np.testing.assert_array_equal(pack_bits(logits), [[0b00000101, 0b10000000]])


# --------------------------------------------------------------------------- distillation
def test_distill_pulls_student_towards_teacher(teacher, float_student, data):
    xt, yt, xq, _ = data
    kd = _student(ternary=False, kd_weight=1.0).distill(teacher, xt, yt)
    assert kd.distilled_ and "kd" in kd.history_[0]
    assert kd.history_[-1]["kd"] < kd.history_[0]["kd"]
    t = teacher.embed(xq)
    assert np.mean((kd.embed(xq) - t) ** 2) < np.mean((float_student.embed(xq) - t) ** 2)
    assert _map(kd, data, 32) > 0.8


def test_distill_rejects_mismatched_or_untrained_teacher(teacher, data):
    xt, yt, _, _ = data
    with pytest.raises(RuntimeError, match="not trained: call fit"):
        _student().distill(_teacher(), xt, yt)
    with pytest.raises(ValueError, match="nbits"):
        _student(nbits=40, prefixes=(40,)).distill(teacher, xt, yt)
    # a shorter student matches the teacher's first bits (per-length students from a prefix teacher)
    short = _student(nbits=16, prefixes=(16,), epochs=1).distill(teacher, xt, yt)
    assert short.encode(xt[:3]).shape == (3, 2)
    with pytest.raises(TypeError, match="teacher"):
        _student().distill("teacher", xt, yt)


# --------------------------------------------------------------------------- augmentation, class distillation
def test_augment_images_shifts_flips_deterministic():
    x = np.zeros((50, 28, 28), dtype=np.float32)
    x[:, 10, 5] = 7.0  # one bright pixel: each copy must hold it moved by at most 2 pixels (or mirrored)
    a = augment_images(x.reshape(50, -1), max_shift=2, flip=True, seed=3)
    assert a.shape == (50, 784) and a.dtype == np.float32
    np.testing.assert_array_equal(a, augment_images(x.reshape(50, -1), max_shift=2, flip=True, seed=3))
    assert not np.array_equal(a, augment_images(x.reshape(50, -1), max_shift=2, flip=True, seed=4))
    cols = set()
    for img in a.reshape(50, 28, 28):
        (r, c), = np.argwhere(img == 7.0)  # exactly one copy of the pixel, nothing else
        assert img.sum() == 7.0 and abs(r - 10) <= 2
        assert abs(c - 5) <= 2 or abs(c - 22) <= 2  # 22 = the mirrored column 27 - 5
        cols.add(c)
    assert any(c > 14 for c in cols) and any(c < 14 for c in cols)  # flipped and unflipped both occur
    np.testing.assert_array_equal(augment_images(x.reshape(50, -1), max_shift=0, flip=False), x.reshape(50, -1))
    v = augmented_views(x.reshape(50, -1), 3, seed=3)
    assert v.shape == (150, 784)
    np.testing.assert_array_equal(v[:50], x.reshape(50, -1))  # view 0: the images themselves
    np.testing.assert_array_equal(v[50:100], a)


def test_distill_with_views_and_class_kd(teacher, data):
    xt, yt, _, _ = data
    s = _student(ternary=True, views=3, class_kd_weight=1.0, cls_weight=0.5, epochs=2).distill(teacher, xt, yt)
    assert {"dsh", "kd", "class_kd", "ce"} <= set(s.history_[0])
    assert _map(s, data, 32) > 0.5
    # the training-only class head is not part of the exported encoder
    spec = s.export_spec()
    assert [layer["scale"].shape[0] for layer in spec["layers"]] == [64, 32, 32]
    again = _student(ternary=True, views=3, class_kd_weight=1.0, cls_weight=0.5, epochs=2).distill(teacher, xt, yt)
    np.testing.assert_array_equal(again.embed(xt[:20]), s.embed(xt[:20]))
    f = _student(ternary=False, views=2, epochs=1).fit(xt, yt)  # the no-teacher student sees the same views
    assert f.encode(xt[:3]).shape == (3, 4)
    u, c = teacher.embed_with_class(xt[:5])
    assert u.shape == (5, 32) and c.shape == (5, N_CLASSES)
    np.testing.assert_array_equal(u, teacher.embed(xt[:5]))
    with pytest.raises(ValueError, match="views"):
        _student(views=0)
    with pytest.raises(ValueError, match="temperature"):
        _student(temperature=0.0)


# --------------------------------------------------------------------------- errors and determinism
@pytest.mark.parametrize("make", [_student, _teacher])
def test_untrained_models_refuse(make, data):
    m = make()
    xq = data[2]
    for call in (lambda: m.encode(xq), lambda: m.embed(xq)):
        with pytest.raises(RuntimeError, match="not trained: call fit"):
            call()
    if make is _student:
        for call in (m.export_spec, m.export):
            with pytest.raises(RuntimeError, match="not trained: call fit"):
                call()


def test_bad_inputs(float_student, data):
    xt, yt, xq, _ = data
    s = _student(epochs=1)
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        s.fit(xt[:, :27], yt)
    with pytest.raises(TypeError, match="uint8 or float32"):
        s.fit(xt.astype(np.float64), yt)
    with pytest.raises(TypeError, match="numpy"):
        s.fit(xt.tolist(), yt)
    bad = xt.astype(np.float32)
    bad[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        s.fit(bad, yt)
    with pytest.raises(ValueError, match=r"\(600,\)"):
        s.fit(xt, yt[:-1])
    with pytest.raises(TypeError, match="integer"):
        s.fit(xt, yt.astype(np.float32))
    with pytest.raises(ValueError, match="finite"):
        float_student.encode(bad)
    with pytest.raises(ValueError, match="shape"):
        float_student.embed(xq.reshape(len(xq), 28, 28, 1))
    with pytest.raises(ValueError, match="multiple of 8"):
        HashStudent(nbits=20)
    with pytest.raises(ValueError, match="prefixes"):
        HashStudent(nbits=32, prefixes=(16, 64))
    with pytest.raises(ValueError, match="t:"):
        HashStudent(t=1.5)
    with pytest.raises(TypeError, match="epochs"):
        HashTeacher(epochs=2.0)


def test_deterministic_by_seed(float_student, data):
    xt, yt, xq, _ = data
    again = _student(ternary=False).fit(xt, yt)
    np.testing.assert_array_equal(again.embed(xq), float_student.embed(xq))
    other = _student(ternary=False, seed=1).fit(xt, yt)
    assert not np.array_equal(other.embed(xq), float_student.embed(xq))


def test_max_seconds_stops_early(data):
    xt, yt, _, _ = data
    s = _student(epochs=1000, max_seconds=0.5).fit(xt, yt)
    assert s.stop_reason_ == "max_seconds" and len(s.history_) < 1000
    assert s.encode(xt[:5]).shape == (5, 4)
    # stopped inside the float warm-up (500 epochs): still exported as ternary
    assert {layer["kind"] for layer in s.export_spec()["layers"]} == {"ternary"}


def test_ternary_float_warmup(data):
    xt, yt, _, _ = data
    s = _student(epochs=2, float_epochs=1).fit(xt, yt)
    assert all(m.quantize for m in s.ternary_layers())
    cold = _student(epochs=2, float_epochs=0).fit(xt, yt)
    assert not np.array_equal(s.embed(xt[:10]), cold.embed(xt[:10]))


# --------------------------------------------------------------------------- metrics
def _reference_metrics(cq, lq, cd, ld, nbits, n):
    """Per-query brute force: Hamming distances bit by bit, stable sort, AP by its definition."""
    bq = np.unpackbits(cq, axis=1, bitorder="little")[:, :nbits].astype(int)
    bd = np.unpackbits(cd, axis=1, bitorder="little")[:, :nbits].astype(int)
    aps, precs = [], []
    for i in range(len(cq)):
        dist = (bq[i] != bd).sum(1)
        order = sorted(range(len(cd)), key=lambda j: (dist[j], j))
        rel = [ld[j] == lq[i] for j in order]
        hits, ap = 0, 0.0
        for r, good in enumerate(rel, 1):
            if good:
                hits += 1
                ap += hits / r
        aps.append(ap / hits if hits else 0.0)
        precs.append(sum(rel[:n]) / min(n, len(cd)))
    return float(np.mean(aps)), float(np.mean(precs))


@pytest.mark.parametrize("nbits", [5, 8, 16, 70])
def test_map_and_precision_match_brute_force(nbits):
    rng = np.random.default_rng(nbits)
    nbytes = -(-nbits // 8)
    cq = rng.integers(0, 256, (150, nbytes), dtype=np.uint8)  # > one 128-query block
    cd = rng.integers(0, 256, (300, nbytes), dtype=np.uint8)
    lq = rng.integers(0, 5, 150)
    ld = rng.integers(0, 5, 300)
    ld[ld == 4] = 3  # class 4 has queries but no relevant database items: AP 0
    ref_map, ref_p = _reference_metrics(cq, lq, cd, ld, nbits, 20)
    assert mean_average_precision(cq, lq, cd, ld, nbits) == pytest.approx(ref_map, abs=1e-12)
    assert precision_at(cq, lq, cd, ld, nbits, n=20) == pytest.approx(ref_p, abs=1e-12)
    both = hamming_ranking_metrics(cq, lq, cd, ld, nbits, ns=(20, 1000))
    assert both["mAP"] == pytest.approx(ref_map, abs=1e-12) and both["P@20"] == pytest.approx(ref_p, abs=1e-12)
    # n beyond the database: the whole database, i.e. the fraction of relevant items
    assert both["P@1000"] == pytest.approx(np.mean([np.mean(ld == q) for q in lq]), abs=1e-12)


def test_hamming_distances_and_ties_in_database_order():
    cd = np.array([[0b1111], [0b0001], [0b0001], [0b0000]], dtype=np.uint8)
    cq = np.array([[0b0001]], dtype=np.uint8)
    np.testing.assert_array_equal(hamming_distances(cq, cd, 8), [[3, 0, 0, 1]])
    # ranking: 1, 2 (tie, database order), 3, 0; only item 2 is relevant -> AP = 1/2
    assert mean_average_precision(cq, np.array([1]), cd, np.array([0, 0, 1, 0]), 8) == pytest.approx(0.5)
    assert precision_at(cq, np.array([1]), cd, np.array([0, 0, 1, 0]), 8, n=2) == pytest.approx(0.5)


def test_metric_bad_inputs():
    c = np.zeros((3, 2), np.uint8)
    lab = np.zeros(3, np.int64)
    with pytest.raises(TypeError, match="uint8"):
        mean_average_precision(c.astype(np.int32), lab, c, lab, 16)
    with pytest.raises(ValueError, match="nbits"):
        mean_average_precision(c, lab, c, lab, 17)
    with pytest.raises(ValueError, match="labels_db"):
        mean_average_precision(c, lab, c, lab[:2], 16)
    with pytest.raises(ValueError, match="bytes per code"):
        precision_at(c, lab, np.zeros((3, 3), np.uint8), lab, 16)
    with pytest.raises(ValueError, match="n >= 1"):
        precision_at(c, lab, c, lab, 16, n=0)
