"""IndexDRQ(d, iters, encoder=enc): DRQ codes in the space of a TernaryEncoder's outputs."""
import numpy as np
import pytest

import drqindex
from drqindex.quantizer import DRQQuantizer


def _random_encoder(rng, input_shape=(8, 8), hidden=48, nbits=16):
    d_in = int(np.prod(input_shape))
    w1 = rng.standard_normal((hidden, d_in))
    w2 = rng.standard_normal((nbits, hidden))
    spec = {
        "version": 1, "input_shape": input_shape,
        "in_scale": np.full(d_in, 1 / 255, np.float32), "in_shift": np.full(d_in, -0.5, np.float32),
        "layers": [
            {"kind": "ternary", "pos": w1 > 0.7, "neg": w1 < -0.7, "w_pos": 0.9, "w_neg": 1.1,
             "scale": np.ones(hidden, np.float32), "shift": np.zeros(hidden, np.float32), "relu": True},
            {"kind": "float", "weight": (w2 * 0.2).astype(np.float32),
             "scale": np.ones(nbits, np.float32), "shift": np.zeros(nbits, np.float32), "relu": False},
        ],
    }
    return drqindex.TernaryEncoder.from_spec(spec)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    enc = _random_encoder(rng)
    images = rng.integers(0, 256, size=(600, 8, 8), dtype=np.uint8)
    space = enc.embed(images)
    # A quantizer in the encoder's 16-d output space (random codebook, decreasing scales): enough to
    # check the plumbing without torch training.
    q = DRQQuantizer(rng.standard_normal((256, enc.nbits)).astype(np.float32) * space.std(),
                     (0.6 ** np.arange(4)).astype(np.float32))
    return enc, images, space, q


def test_search_equals_plain_index_on_embeddings(setup):
    enc, images, space, q = setup
    with_enc = drqindex.IndexDRQ(64, 4, encoder=enc)
    with_enc.set_quantizer(q)
    with_enc.add(images[:500])
    plain = drqindex.IndexDRQ(enc.nbits, 4)
    plain.set_quantizer(q)
    plain.add(space[:500])
    for m in (1, 2, 4):
        D1, I1 = with_enc.search(images[500:], 10, iters=m)
        D2, I2 = plain.search(space[500:], 10, iters=m)
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_array_equal(D1, D2)
    # flattened float32 input is accepted too, with the same result
    D3, I3 = with_enc.search(images[500:].reshape(100, 64).astype(np.float32), 10)
    np.testing.assert_array_equal(I3, plain.search(space[500:], 10)[1])
    assert with_enc.reconstruct(3).shape == (enc.nbits,)
    np.testing.assert_array_equal(with_enc.sa_encode(images[:5]), plain.sa_encode(space[:5]))


def test_save_load_keeps_encoder(setup, tmp_path):
    enc, images, _, q = setup
    index = drqindex.IndexDRQ(64, 4, encoder=enc)
    index.set_quantizer(q)
    index.add(images[:300])
    path = tmp_path / "enc.drq"
    drqindex.write_index(index, str(path))
    back = drqindex.read_index(str(path))
    assert back.encoder == enc and back.ntotal == 300 and back.code_space_d == enc.nbits
    np.testing.assert_array_equal(back.search(images[300:340], 5)[1], index.search(images[300:340], 5)[1])
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 9):
        bad = tmp_path / f"cut{cut}.drq"
        bad.write_bytes(data[:cut])
        with pytest.raises(drqindex.IndexFileError):
            drqindex.read_index(str(bad))


def test_bad_inputs(setup):
    enc, images, _, q = setup
    with pytest.raises(ValueError, match="input dimension"):
        drqindex.IndexDRQ(784, 4, encoder=enc)
    with pytest.raises(TypeError, match="TernaryEncoder"):
        drqindex.IndexDRQ(64, 4, encoder="not an encoder")
    index = drqindex.IndexDRQ(64, 4, encoder=enc)
    with pytest.raises(RuntimeError):
        index.search(images[:2], 3)
    with pytest.raises(ValueError, match="quantizer"):
        index.set_quantizer(DRQQuantizer(np.ones((256, 64), np.float32), np.ones(4, np.float32)))
    index.set_quantizer(q)
    index.add(images[:50])
    for bad in (images[:3, :7], images[:3].astype(np.int32)):
        with pytest.raises((ValueError, TypeError)):
            index.add(bad)
    assert index.ntotal == 50
    with pytest.raises(ValueError, match="encoder"):
        drqindex.IndexRefineFlat(drqindex.IndexDRQ(64, 4, encoder=enc))
    with pytest.raises(ValueError, match="encoder"):
        drqindex.to_faiss(index)
    other = drqindex.IndexDRQ(enc.nbits, 4)
    other.set_quantizer(q)
    with pytest.raises(ValueError, match="expected d=64"):
        index.merge_from(other)
    assert index.ntotal == 50
