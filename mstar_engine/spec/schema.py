"""The spec schema: one attrs class per TOML table. Every default and bound lives here, once.

A spec is a TOML file with the tables below; only ``[experiment] name``, ``[process] family``
and ``[data] name`` are required. ``mstar plan`` prints every resolved value.
"""
from __future__ import annotations

import attrs

from mstar_engine.data.catalog import DATASETS
from mstar_engine.families import REGISTRY
from mstar_engine.metrics.catalog import METRICS
from mstar_engine.schedules import SCHEDULES
from mstar_engine.spec.fields import setting, section

PRECISIONS = ("fp32", "bf16", "fp16")
COUPLINGS = ("independent", "deterministic", "constant", "ddpm", "learned")
INPUTS = ("auto", "tail", "state", "tail+state")
LOSSES = ("kl", "kl-rescaled", "x0-mse", "eps-mse")
WEIGHTINGS = ("none", "snr", "snr-trunc", "min-snr")
UNET_PRESETS = ("cifar10-ddpm", "imagenet64", "imagenet128")
KINDS = ("exponential-family", "flow-matching", "energy-score", "vae")
TIME_DRAWS = ("uniform", "logit-normal")
CONSISTENCY_WEIGHTS = ("uniform", "inverse-step", "inverse-sqrt-step")

#: Longest run or [compare] variant name: each becomes a folder name (most file systems allow 255
#: bytes per name; the rest is left for suffixes and the paths under it).
NAME_LENGTH = 100
#: Largest experiment.seed. The training loop seeds torch generators with
#: (seed · 1,000,003 + block) · 7,919 + stream (train/inputs.py, distributed.group.stream_key),
#: which torch.Generator.manual_seed needs below 2^64: seeds below 2^31 keep it there.
SEED_MAX = 2**31 - 1
SEED_WHY = ("seeds are below 2^31 because the training's random streams are seeded with "
            "(seed × 1,000,003 + block) × 7,919 + stream, which must fit torch's 64-bit generator seed")


def family_names() -> list[str]:
    return sorted(REGISTRY)


def schedule_names() -> list[str]:
    return ["auto", *sorted(SCHEDULES)]


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def metric_names() -> list[str]:
    return sorted(METRICS)


@attrs.define
class Experiment:
    name: str = setting(doc="run name; the run directory is output_dir/name", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
                        max_length=NAME_LENGTH, why=f"the name is a folder name: use at most {NAME_LENGTH} characters")
    seed: int = setting(0, "seed of every random stream (data order, noise, initialisation)", ge=0, le=SEED_MAX,
                        why=SEED_WHY)
    output_dir: str = setting("runs", "folder that holds run directories")
    description: str = setting("", "free text shown by mstar plan")


@attrs.define
class Schedule:
    name: str = setting("auto", "noise schedule; auto = the family's published schedule (mstar list schedules)",
                        choices=schedule_names)
    reference: str = setting("ss-cosine", "Gaussian schedule matched by snr-matched",
                             choices=("ss-cosine", "ss-linear", "cosine", "linear"))
    values: list[float] | None = setting(None, "custom schedule values (name = \"custom\"), length steps or steps + 1",
                                         min_length=2)
    file: str | None = setting(None, "custom schedule .npy file (name = \"custom\")")


@attrs.define
class Coupling:
    kind: str = setting("independent", "coupling of consecutive steps: independent (star-shaped, rho = 0), "
                        "deterministic (rho = 1), constant, ddpm (rho*), learned", choices=COUPLINGS)
    rho: float | None = setting(None, "coupling strength for kind = \"constant\"; for kind = \"learned\", its "
                                "start at every step (default: the ddpm rule)", ge=0.0, le=1.0)
    lr: float = setting(1e-3, "learning rate of the learned coupling parameters", gt=0.0)


@attrs.define
class Flow:
    time: str = setting("uniform", "law of the training times t: uniform, or logit-normal (sigmoid of "
                        "N(time_mean, time_std^2), Esser et al. 2024)", choices=TIME_DRAWS)
    time_mean: float = setting(0.0, "mean of the logit-normal time law")
    time_std: float = setting(1.0, "standard deviation of the logit-normal time law", gt=0.0)
    solver: str = setting("euler", "ODE solver of sampling: euler (one network evaluation per step) or heun "
                          "(second order, two per step)", choices=("euler", "heun"))


@attrs.define
class Energy:
    score: str = setting("energy", "training score: energy (generalised energy score) or kernel (the MMD "
                         "variant, Gaussian kernel)", choices=("energy", "kernel"))
    beta: float = setting(0.1, "exponent beta of the energy score (strictly proper for 0 < beta < 2)", gt=0.0, le=2.0)
    lam: float = setting(1.0, "weight lambda of the interaction term (1: a proper scoring rule)", ge=0.0)
    draws: int = setting(8, "draws m of the denoiser per training example", ge=2, le=256)
    bandwidth: float = setting(1.0, "kernel bandwidth of score = \"kernel\"", gt=0.0)
    eta: float = setting(1.0, "sampling noise of the bridge steps: 1 = the Gaussian posterior (the published "
                         "sampler), 0 = deterministic DDIM steps", ge=0.0, le=1.0)
    time: str = setting("uniform", "law of the training times t", choices=TIME_DRAWS)


@attrs.define
class Vae:
    latent_channels: int = setting(4, "channels of the latent, which is (latent_channels, H/4, W/4)", ge=1)
    channels: int = setting(32, "base channel count of the encoder and decoder (twice as many at H/4)", ge=8)
    beta: float = setting(1.0, "weight of the KL term; 1 = the ELBO", gt=0.0)
    score_draws: int = setting(8, "latent draws averaged in the negative-ELBO anomaly score", ge=1)


@attrs.define
class Process:
    kind: str = setting("exponential-family", "model kind: exponential-family (star-shaped / M-Star), "
                        "flow-matching (rectified flow), energy-score (distributional denoiser) or vae (the VAE "
                        "baseline, negative ELBO; images); the last three work in R^d with Gaussian noise "
                        "(family = \"gaussian\")", choices=KINDS)
    family: str = setting(doc="exponential family of the noise (mstar list families)", choices=family_names)
    steps: int = setting(1000, "number of diffusion steps T", ge=2, le=100_000)
    schedule: Schedule = section(Schedule, "noise schedule")
    coupling: Coupling = section(Coupling, "coupling of consecutive steps (MATH.md §2)")
    inputs: str = setting("auto", "network inputs: tail statistic, state x_t or both; auto = tail for "
                          "independent coupling, tail+state otherwise", choices=INPUTS)
    loss: str = setting("kl-rescaled", "training loss", choices=LOSSES)
    loss_weighting: str = setting("none", "per-step loss weight", choices=WEIGHTINGS)
    flow: Flow = section(Flow, "flow matching (kind = \"flow-matching\")")
    energy: Energy = section(Energy, "energy-score denoiser (kind = \"energy-score\")")
    vae: Vae = section(Vae, "VAE baseline (kind = \"vae\"): its own conv encoder and decoder; [network] does not "
                       "apply")


@attrs.define
class Data:
    name: str = setting(doc="dataset (mstar list datasets)", choices=dataset_names)
    root: str | None = setting(None, "local folder of a torchvision dataset or an image folder; the file of "
                               "data.name = \"file\"")
    download: bool = setting(False, "allow torchvision to download the dataset into root (opt-in)")
    num_examples: int | None = setting(None, "size of a synthetic dataset (default 50000)", ge=1)
    dim: int | None = setting(None, "dimension of a synthetic dataset (see mstar list datasets)", ge=1)
    classes: list[int] | None = setting(None, "keep only these class labels (anomaly detection: the normal classes)",
                                        min_length=1, ge=0)
    image_size: int | None = setting(None, "resize images to this size (default: the dataset's)", ge=4)
    crop: str = setting("center", "how to crop resized images", choices=("center", "random", "none"))
    range: str = setting("symmetric", "image value range: symmetric = [-1, 1], unit = (0, 1)",
                         choices=("symmetric", "unit"))
    flip: bool = setting(False, "random horizontal flips (images)")
    holdout: float = setting(0.1, "fraction held out for evaluation", ge=0.0, lt=1.0)


@attrs.define
class MLP:
    hidden: int = setting(512, "width of the hidden layers", ge=1)
    blocks: int = setting(3, "number of residual blocks", ge=0)
    time_dim: int = setting(32, "size of the sinusoidal time embedding", ge=2)


@attrs.define
class UNet:
    channels: int = setting(128, "base channel count", ge=8)
    channel_mult: list[int] = setting(factory=lambda: [1, 2, 2, 2], doc="channel multiplier per resolution",
                                      min_length=1, ge=1)
    res_blocks: int = setting(2, "residual blocks per resolution", ge=1)
    attention_resolutions: list[int] = setting(factory=lambda: [16], doc="resolutions with self-attention", ge=1)
    head_channels: int = setting(64, "channels per attention head", ge=1)


@attrs.define
class Network:
    kind: str = setting("auto", "denoiser: mlp, unet, or auto (unet for images, mlp otherwise)",
                        choices=("auto", "mlp", "unet"))
    preset: str | None = setting(None, "named U-Net configuration", choices=UNET_PRESETS)
    dropout: float = setting(0.0, "dropout rate", ge=0.0, lt=1.0)
    class_conditional: bool = setting(False, "condition on class labels (enables guidance)")
    label_dropout: float = setting(0.1, "probability of dropping the label in training (classifier-free guidance)",
                                   ge=0.0, le=1.0)
    mlp: MLP = section(MLP, "MLP sizes (kind = mlp)")
    unet: UNet = section(UNet, "U-Net sizes (kind = unet)")


@attrs.define
class Train:
    batch_size: int = setting(128, "global batch size (split over processes)", ge=1)
    steps: int = setting(10_000, "optimiser steps (ignored when epochs is set)", ge=1)
    epochs: int | None = setting(None, "train for this many passes over the data instead of steps", ge=1)
    optimizer: str = setting("adamw", "optimiser", choices=("adamw", "adam"))
    lr: float = setting(2e-4, "peak learning rate", gt=0.0, le=1.0)
    betas: list[float] = setting(factory=lambda: [0.9, 0.999], doc="Adam betas", length=2, ge=0.0, lt=1.0)
    weight_decay: float = setting(0.0, "decoupled weight decay", ge=0.0)
    lr_schedule: str = setting("constant", "decay after warm-up", choices=("constant", "cosine", "linear"))
    warmup_steps: int = setting(0, "linear warm-up length in optimiser steps", ge=0)
    ema: float = setting(0.9999, "EMA decay of the weights used for sampling (0 disables)", ge=0.0, lt=1.0)
    ema_warmup: bool = setting(True, "EMA decay min(ema, (1+n)/(10+n)) early in training")
    clip_grad: float | None = setting(1.0, "gradient-norm clipping threshold (unset disables)", gt=0.0)
    loss_limit: float = setting(100.0, "stop as diverged (last good checkpoint kept) when a step's loss exceeds "
                                "this many times the untrained network's (the first step's; 0 disables)", ge=0.0)
    precision: str = setting("fp32", "autocast precision", choices=PRECISIONS)
    compile: bool = setting(False, "torch.compile the network")
    channels_last: bool = setting(False, "channels_last memory format (images on GPU)")
    activation_checkpointing: bool = setting(False, "recompute activations in the backward pass")
    accumulation: int = setting(1, "gradient accumulation micro-batches per optimiser step", ge=1)
    t_per_rollout: int = setting(1, "training steps t drawn from one forward roll-out (at most process.steps)",
                                 ge=1)
    checkpoint_every: int = setting(1000, "optimiser steps between checkpoints", ge=1)
    keep_checkpoints: int = setting(3, "training checkpoints kept (the newest); 0 keeps every one", ge=0)
    eval_every: int | None = setting(None, "optimiser steps between evaluations of the EMA weights during training "
                                     "(eval.metrics at eval.steps, one line per metric in eval.jsonl); unset: only "
                                     "after training", ge=1)
    log_every: int = setting(100, "optimiser steps between status lines", ge=1)
    workers: int = setting(0, "DataLoader worker processes", ge=0)


@attrs.define
class Sample:
    num_samples: int = setting(1000, "samples drawn after training", ge=1)
    steps: int | None = setting(None, "network evaluations (default: process.steps)", ge=1)
    batch_size: int = setting(256, "sampling batch size (batches are shared out over processes)", ge=1)
    final: str = setting("x0", "return the last prediction x0 or a final draw", choices=("x0", "draw"))
    coupling: str = setting("model", "coupling of the reverse chain: model (the trained coupling rho_t) or "
                            "deterministic (rho = 1, the DDIM analogue: a function of the starting noise; for "
                            "models that read the state alone)", choices=("model", "deterministic"))
    precision: str = setting("fp32", "autocast precision of the network while sampling (after training, in "
                             "evaluations and mstar sample); the chain itself stays float64", choices=PRECISIONS)
    guidance: float = setting(1.0, "classifier-free guidance scale w with class_label: 1 = the conditional model, "
                                   "> 1 stronger, 0 = unconditional", ge=0.0)
    class_label: int | None = setting(None, "sample this class (class-conditional models)", ge=0)


@attrs.define
class Distill:
    method: str = setting("progressive", "progressive (halving stages, Salimans & Ho 2022), consistency (Song et al. "
                          "2023, from the deterministic rho = 1 sampler of a state-reading model) or reflow (Liu et al. "
                          "2023, flow-matching models)", choices=("progressive", "consistency", "reflow"))
    to: int | None = setting(None, "distil down to this many steps (progressive: halving each stage; consistency "
                             "and reflow: the student's default sampling evaluations)", ge=1)
    stages: list[int] | None = setting(None, "explicit step counts of the stages, each half the previous",
                                       min_length=1)
    steps_per_stage: int = setting(50_000, "optimiser steps per stage", ge=1)
    lr: float = setting(5e-5, "learning rate at the start of each stage (annealed linearly to 0)", gt=0.0)
    batch_size: int | None = setting(None, "batch size (default: train.batch_size)", ge=1)
    weighting: str = setting("snr-trunc", "loss weight: max(SNR, 1) (snr-trunc), SNR or none",
                             choices=("snr-trunc", "snr", "none"))
    coupling: str = setting("auto", "sampling coupling of teacher and students: deterministic (rho = 1, the DDIM "
                            "analogue), model (the trained coupling, noise shared by teacher and student), auto = "
                            "deterministic when the network reads the state alone, else model",
                            choices=("auto", "deterministic", "model"))
    teacher_steps: int | None = setting(None, "consistency: the teacher's grid N (deterministic teacher steps between "
                                        "which the student is made consistent; default min(16, process.steps)); "
                                        "reflow: the teacher's ODE evaluations per generated pair (default 64)", ge=1)
    ema_target: float = setting(0.95, "consistency: EMA decay of the target network (Song et al. 2023)", ge=0.0, lt=1.0)
    sigma_data: float = setting(0.5, "consistency: sigma_data of the boundary parametrisation c_skip, c_out (the "
                                "published 0.5 is for images in [-1, 1]; use the data's standard deviation)", gt=0.0)
    consistency_weight: str = setting("uniform", "consistency: weight of grid interval n in the loss: uniform (Song "
                                      "et al. 2023), inverse-step = 1/(sigma_n - sigma_n-1) (Song & Dhariwal 2023; "
                                      "the small steps that multistep sampling ends on count more) or "
                                      "inverse-sqrt-step = its square root; Gaussian family only",
                                      choices=CONSISTENCY_WEIGHTS)
    rounds: int = setting(1, "reflow: rectification rounds, each trained on its teacher's ODE couplings", ge=1, le=8)
    pairs: int | None = setting(None, "reflow: (noise, sample) pairs generated per round (default: the number of "
                                "training examples)", ge=1)
    target: str = setting("auto", "regression target: landing (the x0 whose one step lands where two teacher steps "
                          "land; state input, coordinatewise families) or teacher (the teacher's prediction after "
                          "its first step); auto = landing where it exists", choices=("auto", "landing", "teacher"))


@attrs.define
class Eval:
    metrics: list[str] = setting(factory=list, doc="metrics to compute (mstar list metrics)", choices=metric_names)
    num_samples: int = setting(5000, "samples per evaluation", ge=2)
    repeats: int = setting(1, "independent draws averaged per metric", ge=1)
    steps: list[int] | None = setting(None, "network-evaluation counts to evaluate (default: sample.steps)",
                                      min_length=1, ge=1)
    batch_size: int = setting(250, "evaluation batch size", ge=1)
    knn_k: int = setting(10, "k of the kNN-KL estimator", ge=1)
    mmd_bandwidth: float | None = setting(None, "MMD kernel bandwidth (default: median heuristic)", ge=1e-6, le=1e6,
                                          why="outside [1e-6, 1e6] the Gaussian kernel is 0 or 1 between any two "
                                          "points of data of ordinary scale (and its 1/σ² overflows near 1e-154), so "
                                          "the MMD says nothing; unset it for the median heuristic")
    inception_weights: str | None = setting(None, "pytorch-fid Inception weights (default: "
                                            "$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth)")
    fid_reference: str | None = setting(None, "FID reference statistics: an .npz with mu and sigma (pytorch-fid's "
                                        "format, e.g. published dataset statistics) instead of the training images'")
    reference_images: int | None = setting(None, "training images the image metrics compare with (FID's statistics; "
                                           "KID's and precision/recall's features): a fixed random subset of this "
                                           "size (default: the whole training set)", ge=2)
    anomaly_classes: list[int] | None = setting(None, "classes treated as anomalies by auprc "
                                                "(default: every class not in data.classes)", min_length=1, ge=0)


@attrs.define
class Devices:
    accelerator: str = setting("auto", "cpu, cuda, or auto (cuda when available)", choices=("auto", "cpu", "cuda"))
    processes: int = setting(1, "processes (one per GPU) through torch.distributed; also the roll-out "
                             "streams, so the results do not depend on the processes launched", ge=1, le=1024)
    backend: str = setting("auto", "torch.distributed backend; auto = nccl on cuda, gloo on cpu",
                           choices=("auto", "nccl", "gloo"))
    jobs: int = setting(0, "models of a [compare] spec trained at the same time on the CPU, each in a process "
                        "with an equal share of the threads; 0 = auto: one per model up to torch's thread count when "
                        "each trains for at least 1000 steps (1 on accelerators and with several processes); the "
                        "results do not depend on it",
                        ge=0, le=1024)


@attrs.define
class Spec:
    experiment: Experiment = setting(doc="name, seed and output folder")
    process: Process = setting(doc="model kind, family, steps, schedule, coupling, inputs and loss")
    data: Data = setting(doc="dataset and preprocessing")
    network: Network = section(Network, "denoiser network")
    train: Train = section(Train, "training")
    sample: Sample = section(Sample, "sampling after training")
    distill: Distill | None = setting(None, "progressive distillation stages")
    eval: Eval = section(Eval, "evaluation")
    devices: Devices = section(Devices, "accelerator and processes")
    compare: dict[str, list[str]] = setting(
        factory=dict, doc="other models to train and evaluate beside this one, each a name and the overrides that "
        "make it, e.g. star-shaped = [\"process.coupling.kind=independent\"]; one comparison table at the end",
        pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", max_length=NAME_LENGTH,
        why=f"each name is a folder name (RUN/compare/<name>): use at most {NAME_LENGTH} characters")
