"""von Mises family on the circle: d independent angles (MATH.md §4; notes §3.7).

    q_t(x | x0) = Π_i exp(κ_t cos(x_i − x0_i)) / (2π I_0(κ_t)),   x_i ∈ [−π, π).

T(x) = (cos x, sin x) per angle (stat_shape (d, 2)), A_t = κ_t, f(x0) = (cos x0, sin x0);
Ω_t = d log(2π I_0(κ_t)) does not depend on x0 and c_t(x) = 0.
KL(q_t(x0) ‖ q_t(x̂0)) = Σ_i κ_t A(κ_t) (1 − cos(x0_i − x̂0_i)) with A = I_1/I_0 (``i1e/i0e``).

Noise map: one normal per angle, a bijection (``inverse_uses_aux`` = False). The offset
φ = x − x0 (wrapped to [−π, π)) has the von Mises CDF F(φ) = ½ + sign(φ) G(|φ|)/2, where G is the
CDF of |φ| on [0, π], density ∝ exp(κ cos θ): the d = 2 geodesic-angle table of the vMF module
(:class:`~mstar_engine.numerics.geodesic.GeodesicAngleCDF`: per-step Gauss–Legendre quadrature,
two monotone cubic Hermite tables, log G for the lower half and
−log(1 − G) for the upper half, inverted exactly by binary search and safeguarded Newton). With
F(φ) = Φ(ξ):

    ξ = sign(φ) √2 erf⁻¹(G(|φ|)),      |φ| = G⁻¹(erf(|ξ|/√2)),

each half evaluated through its own tail in log space (the signed-angle maps of that module,
:func:`~mstar_engine.numerics.geodesic.signed_angle_from_normal` and its inverse, which the vMF
family uses for d = 2). The noise map runs in float64 and returns the input dtype.
``sample`` (the star-shaped draws) skips the table: Best–Fisher rejection sampling.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mstar_engine.families.base import Family, register
from mstar_engine.numerics.bessel import bessel_ratio
from mstar_engine.numerics.direct_samplers import von_mises_offset
from mstar_engine.numerics.geodesic import GeodesicAngleCDF, normal_from_signed_angle, signed_angle_from_normal

_TWO_PI = 2 * math.pi
#: Angles per block of the noise maps and the sampler: their ~150 elementwise temporaries on a whole
#: CIFAR-sized batch (393,216 angles, 3 MB each) would each fault in fresh pages; blocks of 256 kB
#: stay in cache and in malloc's heap.
_BLOCK = 1 << 15


def _blockwise(fn, t: Tensor, *tensors: Tensor) -> Tensor:
    """fn(t, *tensors) over blocks of examples of about :data:`_BLOCK` angles, concatenated
    (a tensor with a batch of one, broadcast against the others, goes whole to every block)."""
    n = t.shape[0]
    per = max(1, _BLOCK // max(1, math.prod(tensors[0].shape[1:])))
    if n <= per:
        return fn(t, *tensors)
    return torch.cat([fn(t[i:i + per], *(v[i:i + per] if v.shape[0] == n else v for v in tensors))
                      for i in range(0, n, per)])


def wrap_angle(x: Tensor) -> Tensor:
    """Map angles to [−π, π)."""
    y = torch.remainder(x + math.pi, _TWO_PI) - math.pi
    return torch.where(y >= math.pi, y - _TWO_PI, y)


@register
class VonMises(Family):
    """Independent von Mises angles VM(x0_i, κ_t), schedule array ``kappa`` (κ_t > 0),
    event shape (d,).

    * stat = κ_t (cos x, sin x), shape (d, 2); features = (cos x0, sin x0).
    * KL = Σ κ_t I_1(κ_t)/I_0(κ_t) (1 − cos(x0 − x̂0)); ``kl_rescaled`` = Σ (1 − cos(x0 − x̂0)).
    * Head: raw (d, 2) ↦ atan2(raw[..., 1], raw[..., 0]) in [−π, π). Prior: uniform angles.
    * ``gaussian_snr`` = κ_t (small-noise limit VM(x0, κ) ≈ N(x0, 1/κ)).
    """

    name = "von-mises"
    summary = "von Mises VM(x0, κ_t) on angles in [-π, π), independent coordinates"
    domain = "circle"
    schedule_params = ("kappa",)
    coordinatewise = True
    schedules = ("von-mises-exp",)

    @classmethod
    def pseudo_step(cls, params: dict[str, np.ndarray]) -> dict[str, float]:
        """κ_0 = 1.1 κ_1 (published vMF; the circle follows the sphere)."""
        return {"kappa": float(1.1 * params["kappa"][0])}

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """x0 uniform on the circle, g = (cos x0, sin x0): κ I_1(κ)/I_0(κ)."""
        kappa = np.asarray(params["kappa"], dtype=np.float64)
        return kappa * bessel_ratio(1.0, torch.from_numpy(kappa)).numpy()

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if len(self.event_shape) != 1:
            raise ValueError(f"von-mises needs event shape (d,), got {self.event_shape}")
        kappa = self.kappa.detach().cpu().double()
        if not bool(torch.isfinite(kappa).all()) or not bool((kappa > 0).all()):
            raise ValueError("von-mises schedule: `kappa` must be finite and > 0 at every step")
        device = self.kappa.device
        i0e, i1e = torch.special.i0e(kappa), torch.special.i1e(kappa)
        self._kappa64 = kappa.to(device)
        self._kl_coef = (kappa * i1e / i0e).to(device)
        self._log_norm = (math.log(_TWO_PI) + torch.log(i0e) + kappa).to(device)  # log(2π I_0(κ))
        self._table = GeodesicAngleCDF(kappa.numpy(), 2).to(device)

    @property
    def stat_shape(self) -> tuple[int, ...]:
        return (*self.event_shape, 2)

    @property
    def raw_shape(self) -> tuple[int, ...]:
        return (*self.event_shape, 2)

    def _coef(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        return values[t].to(like.dtype)[:, None]

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """x = wrap(x0 + sign(ξ) θ) with G_t(θ) = erf(|ξ|/√2) = 2Φ(|ξ|) − 1.

        |ξ| ≤ Φ⁻¹(¾) puts θ below the median: log G = log erf(|ξ|/√2); above it the upper tail
        log S = log(1 − G) = log 2 + log Φ(−|ξ|) is used, so neither tail loses precision.
        """
        return _blockwise(self._from_noise, self._steps(t, xi.shape[0]), xi, x0)

    def _from_noise(self, t: Tensor, xi: Tensor, x0: Tensor) -> Tensor:
        xi = xi.to(torch.float64)
        theta, _ = signed_angle_from_normal(self._table, xi, t[:, None])  # rows broadcast over the angles
        return wrap_angle(x0.to(torch.float64) + torch.sign(xi) * theta).to(x0.dtype)

    def sample(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Direct draw, the law of ``from_noise`` of standard normal noise without the table's
        inverse: x = wrap(x0 + θ), θ ~ VM(0, κ_t) by Best–Fisher rejection with uniforms from
        ``generator`` (:func:`~mstar_engine.numerics.direct_samplers.von_mises_offset`)."""
        t = self._steps(t, x0.shape[0])
        theta = von_mises_offset(self._kappa64[t], math.prod(x0.shape[1:]), generator).reshape(x0.shape)
        return _blockwise(lambda _, x0, theta: wrap_angle(x0.to(torch.float64) + theta).to(x0.dtype), t, x0, theta)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int,
                 generator: torch.Generator | None = None) -> Tensor:
        """ξ = sign(φ) Φ⁻¹((1 + G_t(|φ|))/2), φ = wrap(x − x0): √2 erf⁻¹(G) below the median,
        −Φ⁻¹(S/2) above it. Exact inverse (no auxiliary draws)."""
        return _blockwise(self._to_noise, self._steps(t, x.shape[0]), x, x0)

    def _to_noise(self, t: Tensor, x: Tensor, x0: Tensor) -> Tensor:
        phi = wrap_angle(x.to(torch.float64) - x0.to(torch.float64))
        theta = phi.abs()
        z = normal_from_signed_angle(self._table, theta, math.pi - theta, t[:, None])
        return (torch.sign(phi) * z).to(x.dtype)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """Σ_i κ_t cos(x_i − x0_i) − log(2π I_0(κ_t))."""
        t = self._steps(t, x.shape[0])
        k = self._coef(self._kappa64, t, x)
        return (k * torch.cos(x - x0) - self._coef(self._log_norm, t, x)).sum(1)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """Σ_i κ_t A(κ_t) (1 − cos(x0_i − x̂0_i)), A = I_1/I_0."""
        t = self._steps(t, x0.shape[0])
        return (self._coef(self._kl_coef, t, x0) * self._one_minus_cos(x0, x0_hat)).sum(1)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """Σ_i (1 − cos(x0_i − x̂0_i)): the KL divided by κ_t A(κ_t)."""
        return self._one_minus_cos(x0, x0_hat).sum(1)

    @staticmethod
    def _one_minus_cos(a: Tensor, b: Tensor) -> Tensor:
        """1 − cos(a − b) as 2 sin²((a − b)/2): no cancellation for nearby angles."""
        return 2 * torch.sin(0.5 * (a - b)) ** 2

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """A_t T(x) = κ_t (cos x, sin x), shape (B, d, 2)."""
        t = self._steps(t, x.shape[0])
        return self._coef(self._kappa64, t, x)[..., None] * torch.stack([torch.cos(x), torch.sin(x)], -1)

    def features(self, x0: Tensor) -> Tensor:
        """f(x0) = (cos x0, sin x0), shape (B, d, 2)."""
        return torch.stack([torch.cos(x0), torch.sin(x0)], -1)

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t = d log(2π I_0(κ_t)), the same for every x0."""
        t = self._steps(t, x0.shape[0])
        return self._log_norm[t].to(x0.dtype) * x0.shape[1]

    def gaussian_snr(self) -> Tensor:
        """κ_t: the SNR of the small-noise limit VM(x0, κ) ≈ N(x0, 1/κ)."""
        return self.kappa

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform angles in [−π, π)."""
        u = torch.rand((n, *self.event_shape), generator=generator, device=device, dtype=torch.float64)
        return wrap_angle(_TWO_PI * u - math.pi).to(dtype)

    def project(self, x0: Tensor) -> Tensor:
        return torch.remainder(x0 + math.pi, 2 * math.pi) - math.pi

    def difference(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi

    def head(self, raw: Tensor) -> Tensor:
        """atan2(raw[..., 1], raw[..., 0]), mapped into [−π, π)."""
        return wrap_angle(torch.atan2(raw[..., 1], raw[..., 0]))

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        if x.ndim < 1 or tuple(x.shape[-1:]) != self.event_shape:
            raise self._domain_error(what, f"expected trailing shape {self.event_shape}, got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise self._domain_error(what, "it contains NaN or infinite values")
        bad = (x < -math.pi) | (x >= math.pi)
        if bool(bad.any()):
            raise self._domain_error(
                what, f"{int(bad.sum())} angle(s) lie outside [−π, π) (range seen "
                      f"[{float(x.min()):.4g}, {float(x.max()):.4g}]); wrap them with "
                      f"remainder(x + π, 2π) − π")
