"""Benchmark data: Fashion-MNIST (ann-benchmarks split), exact ground truth with a disk cache, recall,
Hamming-ranking mAP / precision@n for hash codes.

numpy only at import; faiss is imported lazily by :func:`ground_truth`.
"""
from .evaluation import (
    hamming_distances,
    hamming_ranking_metrics,
    k_recall_at_k,
    mean_average_precision,
    precision_at,
    recall_at,
)
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
    "mean_average_precision",
    "precision_at",
    "hamming_distances",
    "hamming_ranking_metrics",
    "INSTALL_HINT",
]
