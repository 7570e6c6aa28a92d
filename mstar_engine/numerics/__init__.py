"""Numerics shared by the families: Gamma and normal CDFs, Bessel ratios, geodesic angles, quadrature.

Each has scipy oracle tests in ``tests/numerics``: :mod:`.special` (normal and Gamma CDFs and their inverses, torch),
:mod:`.incomplete_beta` (the regularised incomplete beta function and the Beta inverse CDF in logit space, torch),
:mod:`.beta_map` (the Beta noise map: scipy on the CPU, :mod:`.incomplete_beta` on accelerators),
:mod:`.bessel` (Bessel ratios and the vMF normaliser), :mod:`.geodesic` (the geodesic-angle
distribution of the sphere and circle), :mod:`.hermite` (its table inverse), :mod:`.direct_samplers` (exact draws
without a noise map: Gamma, Bartlett, von Mises), :mod:`.quadrature` (expectations over reference data)."""
