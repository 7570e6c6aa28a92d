"""Metric catalog, low-dimensional distances, Fréchet distance, Inception FID/KID/precision/recall/IS, AUPRC."""
