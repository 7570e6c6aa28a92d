"""Metric catalog, low-dimensional distances, Fréchet distance, Inception FID/IS, AUPRC."""
