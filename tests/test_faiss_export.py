"""to_faiss: faiss's own IndexResidualQuantizer over our codes returns our neighbours and distances."""
import faiss
import numpy as np
import pytest

import drqindex
from conftest import make_index, make_quantizer


def assert_same_neighbours(D1, I1, D2, I2, metric, tol=1e-4):
    """Same distances; same ids except where candidates tie (equal codes at a short prefix tie
    exactly, and faiss orders ties differently from drqindex)."""
    np.testing.assert_allclose(D1, D2, rtol=tol, atol=tol)
    sign = 1 if metric == drqindex.METRIC_L2 else -1
    for d1, i1, i2 in zip(D1, I1, I2):
        boundary = sign * d1[-1] - tol
        strictly_inside = sign * d1 < boundary
        assert set(i1[strictly_inside]) <= set(i2), (i1, i2)
        assert set(i1[strictly_inside]) == set(i2[sign * d1 < boundary])


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_faiss_returns_our_neighbours_at_every_prefix(metric, rng):
    M = 6
    index, _ = make_index(d=16, M=M, n=400, metric=metric)
    xq = rng.standard_normal((25, 16)).astype(np.float32)
    for m in range(1, M + 1):
        exported = drqindex.to_faiss(index, iters=m)
        assert isinstance(exported, faiss.IndexResidualQuantizer)
        assert exported.ntotal == index.ntotal and exported.rq.M == m and exported.d == 16
        assert exported.metric_type == (faiss.METRIC_L2 if metric == drqindex.METRIC_L2 else faiss.METRIC_INNER_PRODUCT)
        D1, I1 = index.search(xq, 10, iters=m)
        D2, I2 = exported.search(xq, 10)
        assert_same_neighbours(D1, I1, D2, I2, metric)
        # faiss decodes our codes into our reconstructions.
        np.testing.assert_allclose(exported.reconstruct_n(0, 5), index.reconstruct_n(0, 5, iters=m), atol=1e-5)


def test_code_layout_matches_faiss_own_encoder(rng):
    # faiss's ResidualQuantizer with beam 1 on codebooks s_j C is our greedy encoder: its packed
    # codes (m bytes + float32 norm) must equal the bytes to_faiss builds from our store.
    d, M = 8, 4
    x = rng.standard_normal((60, d)).astype(np.float32)
    index = drqindex.IndexDRQ(d, iters=M)
    index.set_quantizer(make_quantizer(d, M))
    index.add(x)
    exported = drqindex.to_faiss(index)
    ours = faiss.vector_to_array(exported.codes).reshape(60, -1)
    theirs = exported.rq.compute_codes(x)
    np.testing.assert_array_equal(ours[:, :M], theirs[:, :M])
    np.testing.assert_allclose(ours[:, M:].copy().view(np.float32), theirs[:, M:].copy().view(np.float32),
                               rtol=1e-5)
    # And adding through faiss afterwards encodes the same way (max_beam_size = 1).
    before = exported.ntotal
    exported.add(x[:5])
    added = faiss.vector_to_array(exported.codes).reshape(before + 5, -1)[before:, :M]
    np.testing.assert_array_equal(added, index.sa_encode(x[:5]))


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_custom_ids_use_an_id_map_and_faiss_io_round_trips(metric, rng, tmp_path):
    index, _ = make_index(d=12, M=5, n=300, metric=metric)
    index.remove_ids(np.arange(0, 300, 4))
    xq = rng.standard_normal((15, 12)).astype(np.float32)
    exported = drqindex.to_faiss(index, iters=3)
    assert isinstance(exported, faiss.IndexIDMap2)
    np.testing.assert_array_equal(faiss.vector_to_array(exported.id_map), index.get_ids())
    D1, I1 = index.search(xq, 8, iters=3)
    D2, I2 = exported.search(xq, 8)
    assert_same_neighbours(D1, I1, D2, I2, metric)
    np.testing.assert_allclose(exported.reconstruct(5), index.reconstruct(5, iters=3), atol=1e-5)
    path = str(tmp_path / "exported.faissindex")
    faiss.write_index(exported, path)
    for back in (faiss.read_index(path), faiss.deserialize_index(faiss.serialize_index(exported))):
        D3, I3 = back.search(xq, 8)
        np.testing.assert_array_equal(I3, I2)
        np.testing.assert_array_equal(D3, D2)


def test_export_errors_and_empty_index():
    with pytest.raises(RuntimeError, match="not trained"):
        drqindex.to_faiss(drqindex.IndexDRQ(8, iters=3))
    with pytest.raises(TypeError, match="expected a drqindex.IndexDRQ"):
        drqindex.to_faiss(faiss.IndexFlatL2(8))
    index, _ = make_index(d=8, M=3, n=10)
    with pytest.raises(ValueError, match="iters: expected 1..3, got 4"):
        drqindex.to_faiss(index, iters=4)
    index.reset()
    exported = drqindex.to_faiss(index)
    assert exported.ntotal == 0 and exported.is_trained


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_ivf_export_searches_like_drqindex(metric, tmp_path):
    import faiss

    rng = np.random.default_rng(5)
    d, M, nlist = 16, 6, 8
    xb = rng.standard_normal((600, d)).astype(np.float32)
    xq = rng.standard_normal((20, d)).astype(np.float32)
    coarse = faiss.IndexFlatL2(d) if metric == drqindex.METRIC_L2 else faiss.IndexFlatIP(d)
    index = drqindex.IndexIVFDRQ(coarse, d, nlist=nlist, iters=M, metric=metric)
    kmeans = faiss.Kmeans(d, nlist, niter=10, seed=1)
    kmeans.train(xb)
    index.set_quantizers(make_quantizer(d, M), centroids=kmeans.centroids)
    index.add_with_ids(xb, np.arange(600, dtype=np.int64) * 3 + 7)
    index.nprobe = 3
    for m in (1, 4, 6):
        exported = drqindex.to_faiss(index, iters=m)
        assert isinstance(exported, faiss.IndexIVFResidualQuantizer) and exported.ntotal == 600
        D1, I1 = index.search(xq, 5, iters=m)
        D2, I2 = exported.search(xq, 5)
        np.testing.assert_allclose(D1, D2, rtol=1e-4, atol=1e-4)
        # Equal distances (vectors of one list sharing a short code) may be ordered differently:
        # drqindex breaks ties by id, faiss by storage order. Ids must agree wherever the distance
        # is not tied within its row.
        # A tie with the last returned distance may also involve vectors just outside the top k.
        tied = (np.isclose(D1[:, :, None], D1[:, None, :], rtol=1e-5, atol=1e-5).sum(-1) > 1) \
            | np.isclose(D1, D1[:, -1:], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(I1[~tied], I2[~tied])
        assert (~tied).sum() >= 20
    path = str(tmp_path / "ivf.faissindex")
    faiss.write_index(exported, path)
    _, I3 = faiss.read_index(path).search(xq, 5)
    np.testing.assert_array_equal(I3, I2)
