"""Datasets: the catalog a spec names from, synthetic, offline, image and file sets, batch streams."""
