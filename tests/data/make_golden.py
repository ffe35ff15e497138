"""Writes the format-1.0 golden files in this folder (run once; the files are committed):

    golden_flat_l2_v1.drq, golden_flat_ip_v1.drq   tiny IndexDRQ files (d=8, M=4, 20 vectors)
    golden_refine_l2_v1.drq                         the same vectors in an IndexRefineFlat
    golden_v1_expected.npz                          what they contain and what searching them returns

tests/test_io.py reads them with the current drqindex and checks both, so every later version keeps
reading today's files. Do NOT regenerate them when the format changes: add new golden files for the
new version next to these. Needs no torch: the quantizer is built from a fixed seed.

    .venv/bin/python tests/data/make_golden.py
"""
from pathlib import Path

import numpy as np

import drqindex

HERE = Path(__file__).parent
D, M, N, NQ, K = 8, 4, 20, 5, 6


def main():
    rng = np.random.default_rng(20261125)
    codebook = rng.standard_normal((256, D)).astype(np.float32)
    scales = (0.75 ** np.arange(M)).astype(np.float32)
    xb = rng.standard_normal((N, D)).astype(np.float32)
    xq = rng.standard_normal((NQ, D)).astype(np.float32)
    ids = (1000 + 7 * np.arange(N)).astype(np.int64)  # not 0..n-1, so the ids section matters
    expected = {"xq": xq, "codebook": codebook, "scales": scales, "ids": ids}
    for name, metric in (("l2", drqindex.METRIC_L2), ("ip", drqindex.METRIC_INNER_PRODUCT)):
        index = drqindex.IndexDRQ(D, iters=M, metric=metric)
        index.set_quantizer(drqindex.DRQQuantizer(codebook, scales))
        index.add_with_ids(xb, ids)
        index.train_info = {"note": "golden file, format 1.0", "metric": name}
        drqindex.write_index(index, HERE / f"golden_flat_{name}_v1.drq")
        expected[f"{name}_codes"] = index._store.get_codes(0, N)
        expected[f"{name}_norms"] = index._store.get_norms(0, N)
        for m in range(1, M + 1):
            Dm, Im = index.search(xq, K, iters=m)
            expected[f"{name}_D{m}"] = Dm
            expected[f"{name}_I{m}"] = Im
    # IndexRefineFlat ("DRQ4,Refine(Flat)", header flag bit 1): the raw vectors and k_factor too.
    refine = drqindex.IndexRefineFlat(drqindex.IndexDRQ(D, iters=M), k_factor=3)
    refine.base_index.set_quantizer(drqindex.DRQQuantizer(codebook, scales))
    refine.add_with_ids(xb, ids)
    drqindex.write_index(refine, HERE / "golden_refine_l2_v1.drq")
    expected["xb"] = xb
    expected["refine_D"], expected["refine_I"] = refine.search(xq, K, iters=2)
    np.savez(HERE / "golden_v1_expected.npz", **expected)


if __name__ == "__main__":
    main()
