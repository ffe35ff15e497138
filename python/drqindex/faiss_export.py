"""to_faiss: the same codes, searchable by faiss itself (faiss.IndexResidualQuantizer).

A DRQ quantizer is a residual quantizer whose m-th codebook is s_m * C: one shared codebook C
scaled per iteration. So a DRQ index truncated to its first m iterations *is* a faiss
IndexResidualQuantizer(d, m, 8) with codebooks s_0 C, ..., s_{m-1} C and the very same code
bytes. to_faiss builds that index from our stored codes (no re-encoding), so faiss returns the
same neighbours with the same distances, and faiss.write_index / read_index / index_cpu_to_gpu /
IndexShards etc. work on it.

How faiss stores a code (checked against faiss.ResidualQuantizer.compute_codes in the tests):
with nbits = 8 the code of a vector is its m code bytes (BitstringWriter, least significant bit
first, so one byte per codebook in order), followed, for L2 with search_type ST_norm_float, by
the float32 squared norm ||xhat_m||^2 of the reconstruction (32 bits, little endian). L2 search
then computes ||q||^2 + norm - 2 <q, xhat_m> from one look-up table per codebook, which is
exactly our ADC. Inner product needs no norm: search type ST_LUT_nonorm, m bytes per code.

The faiss index's max_beam_size is set to 1, so vectors added to it later through faiss are
encoded greedily, as drqindex does (faiss's default beam search would pick other codes).
"""
from __future__ import annotations

import numpy as np

from . import _validate
from .metrics import METRIC_L2


def to_faiss(index, iters: int | None = None):
    """A native faiss index over the first `iters` (default: all M) bytes of `index`'s codes.

    Returns faiss.IndexResidualQuantizer(d, iters, 8) when the stored ids are 0 .. ntotal - 1 in
    storage order, else that index wrapped in faiss.IndexIDMap2 carrying the ids.
    """
    import faiss

    from .index_drq import IndexDRQ

    if not isinstance(index, IndexDRQ):
        raise TypeError(f"index: expected a drqindex.IndexDRQ, got {type(index).__name__}")
    index._check_trained("to_faiss")
    m = _validate.iters_value(iters, index.iters)
    q = index.quantizer
    l2 = index.metric_type == METRIC_L2
    AQ = faiss.AdditiveQuantizer
    rq_index = faiss.IndexResidualQuantizer(
        index.d, m, 8, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT,
        AQ.ST_norm_float if l2 else AQ.ST_LUT_nonorm)
    rq = rq_index.rq
    codebooks = q.scales[:m, None, None] * q.codebook[None, :, :]  # (m, 256, d): s_j C
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), rq.codebooks)
    rq.max_beam_size = 1
    rq.is_trained = True
    rq_index.is_trained = True

    with index._lock.read():
        n = index.ntotal
        codes = index._store.get_codes(0, n)[:, :m] if n else np.empty((0, m), np.uint8)
        norms = index._store.get_norms(0, n)[:, m - 1] if n else np.empty(0, np.float32)
        ids = index._store.get_ids()
    if l2:
        norm_bytes = np.ascontiguousarray(norms, dtype="<f4").view(np.uint8).reshape(n, 4)
        packed = np.concatenate([codes, norm_bytes], axis=1)
    else:
        packed = codes
    if packed.shape[1] != rq_index.code_size:  # the layout assumption above, checked not trusted
        raise RuntimeError(f"to_faiss: faiss expects {rq_index.code_size} bytes per code, built {packed.shape[1]}")
    # faiss.IndexIDMap2 refuses a non-empty sub-index, so the wrapper (if any) is made first.
    sequential = np.array_equal(ids, np.arange(n, dtype=np.int64))
    wrapped = None if sequential else faiss.IndexIDMap2(rq_index)
    if n:
        faiss.copy_array_to_vector(np.ascontiguousarray(packed).ravel(), rq_index.codes)
    rq_index.ntotal = n
    if wrapped is None:
        return rq_index
    faiss.copy_array_to_vector(ids, wrapped.id_map)
    wrapped.ntotal = n
    wrapped.construct_rev_map()
    return wrapped
