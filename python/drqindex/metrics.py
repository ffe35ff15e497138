"""Metric constants, numerically equal to faiss's so either module's constants can be passed."""
METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1
