"""The exponential-family protocol (MATH.md §1, §2, §4) and the family registry.

Conventions shared by every family
----------------------------------
* A family instance holds per-step schedule arrays of length ``T + 1`` indexed by the step
  ``t = 0..T``. Steps ``1..T`` are the forward process; index ``0`` is the *pseudo step*: a sharp
  marginal around x0 used by the last KL term (t = 1) and by the final draw.
* ``t`` arguments are integer tensors of shape ``(B,)`` (or a Python int, broadcast to the batch).
  Every method is vectorised over the batch; there are no per-sample Python loops.
* ``x0``, ``x`` have shape ``(B, *event_shape)``; noise ``xi`` has shape ``(B, *noise_shape)``
  (it can be larger than the event when the map loses dimensions, see ``to_noise``); tail-statistic
  terms have shape ``(B, *stat_shape)``.
* Per-example reductions (``log_prob``, ``kl``) sum over the event and return shape ``(B,)``.

A family knows nothing of networks or training: the head maps raw network outputs into the
domain, and the process module combines families with couplings.
"""
from __future__ import annotations

import abc
import math
import numbers
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mstar_engine.families.domains import DOMAINS
from mstar_engine.numerics.special import compute_dtype


class DomainError(ValueError):
    """Data outside a family's domain. The message says what is wrong and how to fix it."""


class ScheduleValueError(ValueError):
    """A custom schedule value outside its family's range: parameter ``name`` at step ``step``
    (0 is the pseudo step) is ``value`` and must be ``rule``."""

    def __init__(self, name: str, rule: str, step: int, value: float) -> None:
        super().__init__(f"custom schedule: {name} must be {rule}; step {step} is {value!r}")
        self.name, self.rule, self.step, self.value = name, rule, step, value


def as_steps(t: Tensor | int, batch: int, device: torch.device) -> Tensor:
    """Return ``t`` as a long tensor of shape ``(batch,)``."""
    if isinstance(t, numbers.Integral):
        return torch.full((batch,), int(t), dtype=torch.long, device=device)
    t = torch.as_tensor(t).to(device=device, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(batch)
    return t


def single_enough(x0: Tensor) -> bool:
    """Outputs in float32 or narrower: a noise map need only be that precise (the coupled
    roll-outs' ``from_noise_along``)."""
    return x0.is_floating_point() and torch.finfo(x0.dtype).bits <= 32


def per_step(values: Tensor, t: Tensor, ndim: int) -> Tensor:
    """Gather the 1-D schedule ``values[t]`` and shape it ``(B, 1, ..., 1)`` with ``ndim`` dims,
    ready to broadcast against a batch tensor of that rank."""
    return values[t].reshape((t.shape[0],) + (1,) * (ndim - 1))


class Family(abc.ABC):
    """One exponential family with a linear parameterisation η_t(x0) = A_t f(x0) + b_t."""

    #: Registry name used in specs (``process.family``).
    name: ClassVar[str]
    #: One-line description shown by ``mstar list families``.
    summary: ClassVar[str]
    #: Data domain (a key of :data:`mstar_engine.families.domains.DOMAINS`).
    domain: ClassVar[str]
    #: Names of the per-step schedule arrays the constructor takes (each of length T + 1).
    schedule_params: ClassVar[tuple[str, ...]]
    #: True when ``to_noise`` needs auxiliary random draws (the map loses dimensions). Such
    #: families cannot use the Monte Carlo copula kernel KL; the ``learned`` coupling falls back
    #: to the ``ddpm`` rule for them.
    inverse_uses_aux: ClassVar[bool] = False
    #: True when x0, x_t and the noise maps act coordinate by coordinate (coordinate i of x_{t-1}
    #: depends on coordinate i of x0 and x_t only): distillation then solves its landing target
    #: per coordinate (:mod:`mstar_engine.distill.targets`).
    coordinatewise: ClassVar[bool] = False

    # Capabilities: each True promises a method the process, sampler or distiller then calls.
    #: ``coupled_kl(x0, x0_hat, t, rho)``: the coupled kernel KL in closed form (:mod:`~mstar_engine.process.kernel_kl`).
    closed_form_kernel_kl: ClassVar[bool] = False
    #: ``kernel_probs(x_t, x0, t, rho)``: class probabilities of a discrete coupled kernel (exact kernel KL).
    discrete_kernel: ClassVar[bool] = False
    #: ``exact_tail(x0, t, rho, generator)``: (x_t, s_t) from their joint law (:mod:`~mstar_engine.process.forward`).
    draws_exact_tail: ClassVar[bool] = False
    #: ``retract(x, v)``: a chart of the domain around x, v shaped like the noise (one entry per degree
    #: of freedom): distillation solves its landing target in it (:func:`~mstar_engine.distill.targets.chart_landing`).
    has_chart: ClassVar[bool] = False
    #: The student's block is affine in x̂0: distillation solves its landing target exactly.
    affine_in_x0: ClassVar[bool] = False
    #: The family's own noise is Gaussian, so the ``eps-mse`` (noise-prediction) loss applies.
    predicts_noise: ClassVar[bool] = False

    # Schedules (:mod:`mstar_engine.schedules`). Builders produce steps 1..T; :meth:`pseudo_step` adds 0.
    #: Named schedules made for this family, its default first; ``snr-matched`` and ``custom`` fit every family.
    schedules: ClassVar[tuple[str, ...]] = ()
    #: What a ``custom`` schedule given as one array holds (default: the first schedule parameter) ...
    custom_primary: ClassVar[str | None] = None
    #: ... and the schedule whose other arrays complete it (None: the family has one parameter).
    custom_fill: ClassVar[str | None] = None
    #: Reference event shape of :meth:`kl_snr` when the data's is not known, and the range of λ
    #: that ``snr-matched`` bisects over on :meth:`kl_snr_path`.
    kl_snr_shape: ClassVar[tuple[int, ...]] = (1,)
    kl_snr_bounds: ClassVar[tuple[float, float]] = (1e-12, 1e12)

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        missing = set(self.schedule_params) - set(schedule)
        extra = set(schedule) - set(self.schedule_params)
        if missing or extra:
            raise TypeError(
                f"{type(self).__name__} takes schedule arrays {self.schedule_params}; "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        schedule = {k: v if torch.is_tensor(v) and v.is_floating_point() else torch.as_tensor(v, dtype=torch.float64)
                    for k, v in schedule.items()}  # lists, arrays and integers as float64 tensors
        lengths = {k: v.shape[0] for k, v in schedule.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"schedule arrays differ in length: {lengths}")
        self.event_shape = tuple(event_shape)
        self.steps = next(iter(lengths.values())) - 1
        for key, value in schedule.items():
            setattr(self, key, value)

    # ------------------------------------------------------------------ shapes
    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the standard-normal noise consumed by ``from_noise`` (per example)."""
        return self.event_shape

    @property
    def stat_shape(self) -> tuple[int, ...]:
        """Shape of one tail-statistic term A_t^T T(x) (per example)."""
        return self.event_shape

    @property
    def raw_shape(self) -> tuple[int, ...]:
        """Shape of the raw network output that ``head`` maps into the domain."""
        return self.event_shape

    def project(self, x0: Tensor) -> Tensor:
        """The nearest point of the closure-safe interior of the domain (used on solved targets)."""
        return x0

    def difference(self, a: Tensor, b: Tensor) -> Tensor:
        """a − b in the domain's coordinates (the circle wraps it into [−π, π))."""
        return a - b

    def to(self, device: torch.device | str) -> "Family":
        """Move every tensor the family holds (schedule arrays, cached tables) to ``device``, in
        place, and return self."""
        for key, value in vars(self).items():
            if torch.is_tensor(value):
                setattr(self, key, value.to(device))
            elif callable(getattr(value, "to", None)):  # a numerics table holding tensors
                value.to(device)
        return self

    # ------------------------------------------------------------------ noise maps (MATH.md §2)
    @abc.abstractmethod
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """A sample of q_t(· | x0) when ``xi ~ N(0, I)`` of shape ``(B, *noise_shape)``."""

    @abc.abstractmethod
    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Inverse of ``from_noise``: exactly N(0, I) when ``x ~ q_t(· | x0)``.

        Stochastic (auxiliary draws from ``generator``) where ``from_noise`` loses dimensions.
        ``from_noise(to_noise(x, x0, t), x0, t) == x`` always holds.
        """

    def sample(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_t ~ q_t(· | x0)."""
        xi = torch.randn((x0.shape[0], *self.noise_shape), generator=generator, device=x0.device, dtype=x0.dtype)
        return self.from_noise(xi, x0, t)

    # ------------------------------------------------------------------ densities and KL
    @abc.abstractmethod
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """log q_t(x | x0), summed over the event: shape ``(B,)``."""

    @abc.abstractmethod
    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL( q_t(· | x0) ‖ q_t(· | x0_hat) ) in closed form, shape ``(B,)``."""

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """The family's rescaled KL (the L_simple analogue); defaults to the plain KL."""
        return self.kl(x0, x0_hat, t)

    # ------------------------------------------------------------------ exponential-family pieces
    @abc.abstractmethod
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """Tail-statistic term A_t^T T(x), shape ``(B, *stat_shape)``."""

    def features(self, x0: Tensor) -> Tensor:
        """f(x0), shape ``(B, *stat_shape)``, so that <f(x0), A_t^T T(x)> is the x0-dependent
        part of log q_t(x | x0) up to the log-normaliser. Default: f(x0) = x0."""
        return x0

    @abc.abstractmethod
    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t(x0) − (terms of b_t that do not depend on x0 may be dropped), shape ``(B,)``.

        Together with ``features``: log q_t(x | x0) = <f(x0), stat(x, t)> − Ω_t(x0) + c_t(x).
        """

    # ------------------------------------------------------------------ prior, head, domain
    @abc.abstractmethod
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """n draws from p(x_T), shape ``(n, *event_shape)``."""

    @abc.abstractmethod
    def head(self, raw: Tensor) -> Tensor:
        """Map raw network outputs ``(B, *raw_shape)`` to x̂0 inside the domain."""

    @abc.abstractmethod
    def check_domain(self, x: Tensor, what: str = "data") -> None:
        """Raise :class:`DomainError` naming ``what``, the violation and the fix."""

    # ------------------------------------------------------------------ tail normalisation (MATH.md §1)
    @property
    def norm_shape(self) -> tuple[int, ...]:
        """Shape of the normalised tail statistic fed to the network (per example)."""
        return self.stat_shape

    def norm_quantity(self, s: Tensor) -> Tensor:
        """The quantity of s_t whose per-step mean and std ``TailNorm`` estimates (default: s_t)."""
        return s

    def normalise_stat(self, s: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """Network input from the tail statistic, given the per-example step statistics ``mean``
        and ``std`` (shape (B,)) of :meth:`norm_quantity`. Default: (s_t − mean_t) / std_t."""
        shape = (-1,) + (1,) * (s.ndim - 1)
        return (s - mean.reshape(shape)) / std.reshape(shape)

    def gaussian_snr(self) -> Tensor:
        """SNR of the Gaussian schedule this family's schedule is matched to, length T + 1.

        Used by the ``ddpm`` coupling rule ρ_t = sqrt(SNR_t / SNR_{t-1}) and by SNR loss weights.
        By default the ``matched_snr`` that :func:`mstar_engine.process.build.build_process` sets
        from the schedule; without one it raises ``NotImplementedError`` with a message.
        """
        matched = getattr(self, "matched_snr", None)
        if matched is not None:
            return matched
        raise NotImplementedError(f"family {self.name!r} has no Gaussian-equivalent SNR")

    def coupling_metrics(self, rho: Tensor) -> dict[str, float]:
        """Diagnostics of a learned coupling ρ_t (length T + 1), logged in metrics.jsonl during
        training; none by default (the Gaussian reports its interaction's error against the optimum)."""
        return {}

    # ------------------------------------------------------------------ schedule facts (class level)
    @classmethod
    def default_schedule(cls, coupling: str) -> str:
        """The schedule ``process.schedule.name = "auto"`` means: the family's published schedule
        (the first of :attr:`schedules`), or ``snr-matched`` when it has none."""
        return cls.schedules[0] if cls.schedules else "snr-matched"

    @classmethod
    def pseudo_step(cls, params: dict[str, np.ndarray]) -> dict[str, float]:
        """Index 0 of the schedule arrays given steps 1..T (the sharp marginal of the last KL term
        and the final draw). Default: a copy of step 1."""
        return {k: float(v[0]) for k, v in params.items()}

    @classmethod
    def schedule_from_primary(cls, values: np.ndarray, fill: dict[str, np.ndarray], first_step: int) -> dict:
        """The schedule arrays of a ``custom`` schedule given as one array (:attr:`custom_primary`),
        the other parameters taken from ``fill`` (:attr:`custom_fill`'s arrays, same steps)."""
        if len(cls.schedule_params) > 1 and not fill:
            raise ValueError(f"custom schedule: the {cls.name} family has several schedule arrays "
                             f"{cls.schedule_params}; give a mapping {{name: values}} or a 2-D .npy file")
        return {cls.schedule_params[0]: values, **{k: fill[k] for k in cls.schedule_params[1:]}}

    @classmethod
    def kl_snr(cls, params: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """SNR_KL (:mod:`mstar_engine.schedules.kl_snr`) of each entry of the schedule arrays. Default,
        for a family without a closed form: the mean of its own :meth:`kl` over 128 fixed pairs of
        prior draws, divided by ½ mean ‖x0 − x0'‖² (one schedule parameter, a concentration)."""
        if len(cls.schedule_params) != 1:
            raise ValueError(f"snr-matched needs a KL-SNR measure for the {cls.name} family, whose schedule has "
                             f"{len(cls.schedule_params)} arrays {cls.schedule_params}; define kl_snr on the class")
        values = np.asarray(params[cls.schedule_params[0]], dtype=np.float64)
        flat = torch.as_tensor(values.reshape(-1))
        fam = cls(shape, **{cls.schedule_params[0]: torch.cat([flat[:1], flat])})
        pairs = fam.prior_sample(256, torch.Generator().manual_seed(0), dtype=torch.float64)
        n, reps = flat.numel(), (flat.numel(), *[1] * len(shape))
        kl = fam.kl(pairs[:128].repeat(reps), pairs[128:].repeat(reps), torch.arange(1, n + 1).repeat_interleave(128))
        kl = kl.reshape(n, -1).mean(1)
        denom = 0.5 * float((pairs[:128] - pairs[128:]).pow(2).flatten(1).sum(1).mean())
        return (kl.double().numpy() / denom).reshape(values.shape)

    @classmethod
    def kl_snr_path(cls, lam: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Schedule arrays along a path λ ↦ θ on which :meth:`kl_snr` grows from 0 (λ → 0, the
        prior) to ∞. Default: the single schedule parameter is λ."""
        return {cls.schedule_params[0]: np.asarray(lam, dtype=np.float64)}

    # ------------------------------------------------------------------ helpers
    def _steps(self, t: Tensor | int, batch: int) -> Tensor:
        """``t`` as a long tensor of shape (batch,) on the device of the schedule arrays."""
        return as_steps(t, batch, getattr(self, self.schedule_params[0]).device)

    def _at(self, key: str, t: Tensor | int, like: Tensor) -> Tensor:
        """The schedule array ``key`` at the steps ``t`` in the compute dtype, shaped (B, 1, ..., 1)
        against ``like``."""
        values = getattr(self, key).to(device=like.device, dtype=compute_dtype(like.device))
        return per_step(values, as_steps(t, like.shape[0], like.device), like.ndim)

    def _domain_error(self, what: str, problem: str) -> DomainError:
        need = DOMAINS[self.domain].requirement
        return DomainError(f"{what} is outside the {self.name} family's domain: {problem}. "
                           f"The {self.name} family needs {need}.")

    def _check_finite(self, x: Tensor, what: str) -> None:
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            raise self._domain_error(what, f"{int((~finite).sum())} of {x.numel()} values are NaN or infinite")


REGISTRY: dict[str, type[Family]] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make a family usable by name in a spec."""
    if cls.domain not in DOMAINS:
        raise ValueError(f"family {cls.__name__} declares unknown domain {cls.domain!r}")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"family name {cls.name!r} is already registered by {REGISTRY[cls.name].__name__}")
    REGISTRY[cls.name] = cls
    return cls


LOG_2PI = math.log(2 * math.pi)
