"""The diffusion process: forward roll-outs (star-shaped, coupled), kernel KL, losses, tail normalisation."""
