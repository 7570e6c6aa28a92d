"""Model kinds behind one interface: M-Star / star-shaped, flow matching, the energy-score model.

The exponential-family diffusion (:mod:`.exponential`), flow matching / rectified flow
(:mod:`.flow`, :mod:`.flow_paths`) and the energy-score distributional denoiser (:mod:`.energy`,
:mod:`.scoring`), each behind :class:`.base.Kind`: what training draws, what it regresses, how it
samples with any number of network evaluations.
"""
