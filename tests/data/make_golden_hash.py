"""Writes the golden files of the hashing kinds (run once; the files are committed):

    golden_hash_v1.drq            IndexBinaryHash (kind 4) with its TernaryEncoder (a ternary and a
                                  float layer), nbits=24 of 32, 30 codes with ids 500 + 3 i
    golden_encoder_v1.drq         the same TernaryEncoder alone (kind 3)
    golden_hash_v1_expected.npz   inputs, logits, codes and search results

tests/test_hamming.py reads them with the current drqindex, so later versions keep reading these
files. Do NOT regenerate them when the format changes: add new golden files next to these.

    .venv/bin/python tests/data/make_golden_hash.py
"""
from pathlib import Path

import numpy as np

import drqindex

HERE = Path(__file__).parent


def golden_spec():
    rng = np.random.default_rng(20261125)
    r = rng.random((16, 20))
    return {
        "version": 1, "input_shape": (4, 5),
        "in_scale": np.full(20, 1 / 255, np.float32), "in_shift": np.full(20, -0.5, np.float32),
        "layers": [
            {"kind": "ternary", "pos": r < 0.3, "neg": (r >= 0.3) & (r < 0.6), "w_pos": 0.75, "w_neg": 0.5,
             "scale": rng.uniform(0.5, 1.5, 16).astype(np.float32),
             "shift": rng.normal(0, 0.1, 16).astype(np.float32), "relu": True},
            {"kind": "float", "weight": rng.standard_normal((32, 16)).astype(np.float32),
             "scale": np.ones(32, np.float32), "shift": rng.normal(0, 0.1, 32).astype(np.float32), "relu": False},
        ],
    }


def main():
    rng = np.random.default_rng(7)
    enc = drqindex.TernaryEncoder.from_spec(golden_spec())
    x = rng.integers(0, 256, (30, 4, 5), dtype=np.uint8)
    index = drqindex.IndexBinaryHash(enc, nbits=24)
    index.add_with_ids(x, 500 + 3 * np.arange(30))
    index.save(HERE / "golden_hash_v1.drq")
    enc.save(HERE / "golden_encoder_v1.drq")
    D, I = index.search(x[:6], 5)
    D16, I16 = index.search(x[:6], 5, nbits=16)
    np.savez(HERE / "golden_hash_v1_expected.npz", x=x, logits=enc.embed(x), codes=index.get_codes(),
             ids=index.get_ids(), D=D, I=I, D16=D16, I16=I16)


if __name__ == "__main__":
    main()
