"""Benchmark data: Fashion-MNIST (ann-benchmarks split), exact ground truth with a disk cache, recall.

numpy only at import; faiss is imported lazily by :func:`ground_truth`.
"""
from .evaluation import k_recall_at_k, recall_at
from .fashion_mnist import (
    INSTALL_HINT,
    FashionMNIST,
    default_cache_dir,
    default_data_dirs,
    ground_truth,
    load_fashion_mnist,
    read_idx,
)

__all__ = [
    "FashionMNIST",
    "load_fashion_mnist",
    "read_idx",
    "ground_truth",
    "default_cache_dir",
    "default_data_dirs",
    "recall_at",
    "k_recall_at_k",
    "INSTALL_HINT",
]
