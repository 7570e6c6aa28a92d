"""Model kinds: the exponential-family diffusion (star-shaped / M-Star) and the few-step methods
it is compared with, each behind one small interface (:mod:`.base`)."""
