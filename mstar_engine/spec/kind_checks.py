"""Semantic checks of ``process.kind``: flow matching, the energy-score model and the VAE work in
R^d with Gaussian noise, the VAE on square images of a size divisible by 4 without labels, and each
distillation method distils the kinds it is made for. Settings of another kind (``[process.flow]``
under M-Star, the coupling under flow matching, ``[network]`` under the VAE) are ignored without a
warning, so that one spec's ``[compare]`` variants can switch kinds."""
from __future__ import annotations

from mstar_engine.data.catalog import DATASETS
from mstar_engine.families import get
from mstar_engine.networks.vae import DOWNSAMPLING

#: Distillation methods and the kinds whose models they distil.
METHOD_KINDS = {"progressive": ("exponential-family",), "consistency": ("exponential-family",),
                "reflow": ("flow-matching",)}
#: Why a kind that no method distils needs none.
UNDISTILLED = {"vae": "the VAE samples with one decoder call"}


def check_kind(c) -> None:
    proc = c.spec.process
    kind = proc.kind
    d = c.spec.distill
    if d is not None and kind not in METHOD_KINDS[d.method]:
        allowed = [m for m, kinds in METHOD_KINDS.items() if kind in kinds]
        c.add(("distill", "method"), f"distill.method = \"{d.method}\" distils {' or '.join(METHOD_KINDS[d.method])} "
              f"models, not process.kind = \"{kind}\"",
              f"use method = {' or '.join(repr(m) for m in allowed)}" if allowed else
              f"remove [distill]: {UNDISTILLED.get(kind, 'this kind samples in few steps as trained')}",
              related=(("process", "kind"),))
        if kind in UNDISTILLED:
            d = None  # nothing to distil: the method's own settings are not checked
    if d is not None and d.method == "consistency" and proc.inputs != "state":
        c.add(("distill", "method"), "consistency distillation needs a teacher whose deterministic sampler is a "
              "function of the state alone", 'train with process.inputs = "state" (e.g. the ddpm coupling sampled with '
              'sample.coupling = "deterministic")', related=(("process", "inputs"),))
    if d is not None and d.method == "consistency" and d.consistency_weight != "uniform" \
            and not get(proc.family).affine_in_x0:
        c.add(("distill", "consistency_weight"), f"distill.consistency_weight = \"{d.consistency_weight}\" weighs the "
              f"grid by the steps of the noise level sigma_t = sqrt(v_t)/m_t, which the {proc.family} family does not "
              "have (its states are not affine in x0)", 'use consistency_weight = "uniform"',
              related=(("process", "family"),))
    if d is not None and d.method != "progressive":
        if d.stages is not None:
            c.add(("distill", "stages"), f"distill.stages are progressive distillation's halvings; {d.method} makes "
                  "one student", "remove stages and set to = the student's sampling evaluations (e.g. 1, 2, 4 or 8)")
        if d.to is None:
            c.add(("distill",), f"distill.method = \"{d.method}\" needs to = the student's sampling evaluations",
                  "add to = 1 (or 2, 4, 8)")
        if d.to is not None and d.to > proc.steps:
            c.add(("distill", "to"), f"{d.to} evaluations exceed process.steps = {proc.steps}", f"use at most {proc.steps}")
    if kind == "exponential-family":
        return
    if get(proc.family).domain != "real":
        c.add(("process", "family"), f"process.kind = \"{kind}\" works in R^d with Gaussian noise, not with the "
              f"{proc.family} family", 'set process.family = "gaussian"', related=(("process", "kind"),))
    if kind == "vae":
        check_vae(c)


def check_vae(c) -> None:
    """The VAE baseline (its conv encoder halves the image size twice) needs square images of a
    size divisible by 4, is unconditional and has no activation checkpointing."""
    spec, info = c.spec, DATASETS[c.spec.data.name]
    if not info.is_image:
        c.add(("process", "kind"), f"process.kind = \"vae\" needs images (C, H, W), and dataset '{info.name}' is "
              "not an image dataset", "use an image dataset (mstar list datasets: digits, mnist, cifar10, ...) or "
              "another process.kind", related=(("data", "name"),))
    else:
        size = info.event_shape(spec.data.dim, spec.data.image_size)[-1]
        if size % DOWNSAMPLING:
            up = -(-size // DOWNSAMPLING) * DOWNSAMPLING
            c.add(("data", "image_size"), f"the VAE's encoder halves the image size twice, so the {size}×{size} "
                  f"images need a size that is a multiple of {DOWNSAMPLING}", f"set data.image_size = {up}",
                  related=(("process", "kind"),))
    if spec.network.class_conditional:
        c.add(("network", "class_conditional"), "the VAE baseline is unconditional: it takes no class labels",
              "remove network.class_conditional (or set it to false)", related=(("process", "kind"),))
    if spec.train.activation_checkpointing:
        c.add(("train", "activation_checkpointing"), "activation checkpointing is the U-Net's; the VAE's small "
              "encoder and decoder have none", "remove train.activation_checkpointing", related=(("process", "kind"),))
