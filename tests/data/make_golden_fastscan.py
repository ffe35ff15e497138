"""Writes the golden file of IndexDRQFastScan (kind 5) (run once; the files are committed):

    golden_fastscan_v1.drq            L2 IndexDRQFastScan, d=16, M=7 (odd: a half-used last code
                                      byte), norm prefixes 2, 4, 6, 7, rerank=5, 300 vectors added
                                      with ids 1000 + 3 i, 30 removed, 20 more added by add()
    golden_fastscan_v1_expected.npz   codebooks, norm quantisers, codes, norm levels, ids, queries
                                      and search results (iters 2, 4, 7; rerank 0 and 10)

The codebooks hold small integers times 2^-j and the queries small integers, so every float the
search computes (tables, bias) is exact whatever the summation order (BLAS once, now the core's
fused multiply-add chains, csrc/drq/fastscan_tables.h): the expected results do
not depend on the machine. tests/test_io_fastscan.py reads the file with the current drqindex, so
later versions keep reading it. Do NOT regenerate it when the format changes: add a new golden file.
The rerank = 0 search results in the .npz are the quantised scan's, not the file's: they were
recomputed from the unchanged .drq when the scan arithmetic changed (norm level added in 16 bits
instead of two uint8 tables, per-byte power-of-two table scales); the rerank = 10 results (exact
float sums) did not change.

    .venv/bin/python tests/data/make_golden_fastscan.py
"""
from pathlib import Path

import numpy as np

import drqindex

HERE = Path(__file__).parent
D, M = 16, 7


def main():
    rng = np.random.default_rng(20261125)
    scale = (2.0 ** -np.arange(M, dtype=np.float32))[:, None, None]
    codebooks = (rng.integers(-8, 9, (M, 16, D)).astype(np.float32) * scale).astype(np.float32)
    codes = rng.integers(0, 16, (320, M))
    x = codebooks[np.arange(M), codes].sum(axis=1) + rng.normal(0, 0.05, (320, D))
    x = x.astype(np.float32)
    index = drqindex.IndexDRQFastScan(D, iters=M, metric=drqindex.METRIC_L2, rerank=5)
    index.set_codebooks(codebooks, x)
    index.train_info = {"note": "golden file, format 1.0, kind 5"}
    index.add_with_ids(x[:300], 1000 + 3 * np.arange(300))
    index.remove_ids(1000 + 3 * np.arange(0, 300, 10))
    index.add(x[300:])
    drqindex.write_index(index, HERE / "golden_fastscan_v1.drq")
    xq = rng.integers(-8, 9, (12, D)).astype(np.float32)
    out = {"codebooks": index.codebooks, "norm_min": index.norm_min, "norm_step": index.norm_step,
           "codes": index._store.get_codes(), "norm_codes": index._store.get_norm_codes(),
           "ids": index.get_ids(), "xq": xq}
    for m in (2, 4, 7):
        for rerank in (0, 10):
            out[f"D{m}_{rerank}"], out[f"I{m}_{rerank}"] = index.search(xq, 8, iters=m, rerank=rerank)
    np.savez(HERE / "golden_fastscan_v1_expected.npz", **out)


if __name__ == "__main__":
    main()
