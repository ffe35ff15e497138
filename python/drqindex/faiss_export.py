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
    from .index_ivf import IndexIVFDRQ

    if isinstance(index, IndexIVFDRQ):
        return _ivf_to_faiss(index, iters)
    if not isinstance(index, IndexDRQ):
        raise TypeError(f"index: expected a drqindex.IndexDRQ or IndexIVFDRQ, got {type(index).__name__}")
    if index.encoder is not None:
        raise ValueError("to_faiss: faiss has no ternary encoder transform, so an IndexDRQ with an encoder "
                         "cannot be exported (its codes live in the encoder's output space)")
    index._check_trained("to_faiss")
    m = _validate.iters_value(iters, index.iters)
    l2 = index.metric_type == METRIC_L2
    AQ = faiss.AdditiveQuantizer
    rq_index = faiss.IndexResidualQuantizer(
        index.d, m, 8, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT,
        AQ.ST_norm_float if l2 else AQ.ST_LUT_nonorm)
    _set_codebooks(rq_index, index.quantizer, m)

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


def _set_codebooks(faiss_index, quantizer, m: int) -> None:
    """Materialise the codebook per step (s_j C, or s_j C_j with one codebook per iteration, j < m)
    as the faiss RQ's codebooks; beam 1 so that vectors faiss itself adds later are encoded
    greedily, as drqindex encodes them."""
    import faiss

    rq = faiss_index.rq
    per_step = quantizer.codebook[:m] if quantizer.per_iteration else quantizer.codebook[None, :, :]
    codebooks = quantizer.scales[:m, None, None] * per_step  # (m, 256, d)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), rq.codebooks)
    rq.max_beam_size = 1
    rq.is_trained = True
    faiss_index.is_trained = True


def _ivf_to_faiss(index, iters):
    """IndexIVFDRQ -> faiss.IndexIVFResidualQuantizer (by_residual) holding the same lists, ids and
    code prefixes. faiss's L2 scan computes ||q - c_l||^2 - 2 <q - c_l, rhat> + ||rhat||^2 with the
    norm stored after the code, so each code carries ||rhat_m||^2 of its residual reconstruction
    (decoded here in float64); IndexIVFDRQ stores a different per-prefix term, which faiss cannot use.
    Inner product needs no norm (<q, c_l> + <q, rhat>)."""
    import faiss

    index._check_trained("to_faiss")
    m = _validate.iters_value(iters, index.iters)
    l2 = index.metric_type == METRIC_L2
    AQ = faiss.AdditiveQuantizer
    # A copy of the coarse quantizer, owned by the returned index: the two indexes stay independent.
    coarse = faiss.deserialize_index(faiss.serialize_index(index.quantizer))
    ivf = faiss.IndexIVFResidualQuantizer(
        coarse, index.d, index.nlist, m, 8, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT,
        AQ.ST_norm_float if l2 else AQ.ST_LUT_nonorm)
    ivf.own_fields = True
    coarse.this.disown()  # faiss frees it with the IVF index
    _set_codebooks(ivf, index.drq_quantizer, m)
    ivf.nprobe = index.nprobe
    with index._lock.read():
        for list_no in range(index.nlist):
            codes, _, ids = index.get_list(list_no)
            n = ids.shape[0]
            if n == 0:
                continue
            prefix = np.ascontiguousarray(codes[:, :m])
            if l2:
                recon = index.drq_quantizer.decode(prefix, m).astype(np.float64)
                norms = np.einsum("ij,ij->i", recon, recon).astype("<f4")
                packed = np.concatenate([prefix, norms.view(np.uint8).reshape(n, 4)], axis=1)
            else:
                packed = prefix
            if packed.shape[1] != ivf.code_size:  # the layout assumption, checked not trusted
                raise RuntimeError(f"to_faiss: faiss expects {ivf.code_size} bytes per code, built {packed.shape[1]}")
            packed = np.ascontiguousarray(packed)
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            ivf.invlists.add_entries(list_no, n, faiss.swig_ptr(ids), faiss.swig_ptr(packed))
        ivf.ntotal = index.ntotal
    return ivf
