"""Model kinds behind one interface: M-Star / star-shaped, flow matching, the energy-score model, a VAE.

The exponential-family diffusion (:mod:`.exponential`), flow matching / rectified flow
(:mod:`.flow`, :mod:`.flow_paths`), the energy-score distributional denoiser (:mod:`.energy`,
:mod:`.scoring`) and the VAE baseline of the anomaly-detection table (:mod:`.vae`), each behind
:class:`.base.Kind`: what training draws, what it regresses, how it samples with any number of
network evaluations (the VAE: always one decoder call).
"""
