"""von Mises–Fisher family on the sphere S^{d-1}, any d ≥ 2 (MATH.md §4; notes §3.4).

    q_t(x | x0) = C_d(κ_t) exp(κ_t <x0, x>),   C_d(κ) = κ^{d/2-1} / ((2π)^{d/2} I_{d/2-1}(κ)),

a density with respect to the surface measure. T(x) = x, A_t = κ_t, f(x0) = x0; Ω_t = −log C_d(κ_t)
does not depend on x0, and c_t(x) = 0. KL(q_t(x0) ‖ q_t(x̂0)) = κ_t A_d(κ_t) (1 − <x0, x̂0>) with
A_d(κ) = I_{d/2}(κ) / I_{d/2-1}(κ) (:func:`bessel_ratio`).

Noise map: a bijection between S^{d−1} and R^{d−1} (noise_shape (d − 1,), one standard normal per
degree of freedom, no auxiliary draws), so that the Gaussian-copula kernel has an exact density
(the ``learned`` coupling's Monte Carlo kernel KL applies) and ρ = 1 is a deterministic map of
the path (MATH.md §2). Write x = cos θ x0 + sin θ Q[0; v] with θ ∈ [0, π] the geodesic angle to
x0, v ∈ S^{d−2} a unit tangent direction and Q the Householder reflection (symmetric, orthogonal,
Q e_1 = x0) whose columns 2..d span x0^⊥: the frame fixed by x0. Under q_t, θ and v are
independent, θ has density ∝ exp(κ cos θ) sin^{d−2} θ and v is uniform on S^{d−2}.

* d ≥ 3, ξ_0 ↦ θ by the inverse CDF: G(θ) = P(Θ ≤ θ) = Φ(−ξ_0), so large ξ_0 means x close to
  x0 (w = <x, x0> = cos θ is increasing in ξ_0). Each half is read from its own tail, in log
  space: log G = log Φ(−ξ_0) for ξ_0 ≥ 0 and log S = log(1 − G) = log Φ(ξ_0) for ξ_0 < 0, so
  neither tail loses precision. For d = 3 in closed form (:class:`SphereAngle3`,
  w = 1 + log(u + (1 − u)e^{−2κ})/κ with u = Φ(ξ_0)); otherwise from per-step tables built at
  construction by Gauss–Legendre quadrature (:class:`GeodesicAngleCDF`).
* d ≥ 3, ξ_{1:d−1} ↦ v ∈ S^m, m = d − 2, by hyperspherical angles (:class:`SphereDirection`),
  v = (cos φ_1, sin φ_1 cos φ_2, …, Π_{i<m} sin φ_i cos φ_m, Π_{i<m} sin φ_i sin φ_m), each angle by
  its own inverse CDF: under the uniform law on S^m the polar angle φ_j ∈ [0, π] (j = 1..m−1) has
  density ∝ sin^{m−j} φ_j (κ = 0 rows of :class:`GeodesicAngleCDF`, G(φ_j) = Φ(−ξ_j)) and the
  azimuth φ_m ∈ (−π, π] is uniform, φ_m = sign(ξ) π erf(|ξ|/√2). For d = 3 only the azimuth.
* d = 2 (the circle): the tangent direction is a sign, so one normal encodes the signed angle
  φ ∈ (−π, π] with density ∝ exp(κ cos φ), F(φ) = Φ(ξ_0): the von Mises map
  (|φ| from the d = 2 table, :func:`signed_angle_from_normal`).
* ``to_noise`` is the exact inverse: y = Q x, θ = atan2(‖y_{1:}‖, y_0) and π − θ = atan2(‖y_{1:}‖, −y_0),
  the angles of y_{1:} by atan2 of suffix norms (hypot), each back through its CDF and Φ⁻¹ with
  log-space tails, clamped at |ξ| ≈ 37.4. The tangent part y_{1:} = sin θ v carries an absolute
  rounding error ~1e-16, so for small θ (large κ) the direction keeps ~1e-16/θ relative accuracy.

Gradients flow through both maps (w.r.t. ξ and x; x0 and κ are constants of the map).
Computations of the noise map run in float64 and return the input dtype.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mstar_engine.families.base import Family, register
from mstar_engine.numerics.bessel import bessel_ratio, log_vmf_normalizer
from mstar_engine.numerics.geodesic import (GeodesicAngleCDF, SphereAngle3, SphereDirection, angle_from_normal,
                                            cos_sin, normal_from_angle, normal_from_signed_angle,
                                            signed_angle_from_normal)


@register
class VonMisesFisher(Family):
    """vMF_d(x0, κ_t) on S^{d−1}, schedule array ``kappa`` (κ_t > 0), event shape (d,), d ≥ 2.

    * stat = κ_t x; features = x0; log_normalizer = −log C_d(κ_t) (independent of x0).
    * KL = κ_t A_d(κ_t) (1 − <x0, x̂0>); ``kl_rescaled`` = 1 − <x0, x̂0>.
    * Head: x̂0 = raw / ‖raw‖ (e_1 where ‖raw‖ < 1e-12). Prior: uniform on the sphere.
    * ``gaussian_snr`` = κ_t: for large κ the tangent deviation of x from x0 is ≈ N(0, I/κ).
    """

    name = "vmf"
    summary = "von Mises–Fisher vMF(x0, κ_t) on the unit sphere S^{d-1}, any d ≥ 2"
    domain = "sphere"
    schedule_params = ("kappa",)
    schedules = ("vmf-spline",)
    kl_snr_shape = (3,)
    has_chart = True

    @classmethod
    def pseudo_step(cls, params: dict[str, np.ndarray]) -> dict[str, float]:
        """κ_0 = 1.1 κ_1 (published vMF; the circle follows the sphere)."""
        return {"kappa": float(1.1 * params["kappa"][0])}

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """x0 uniform on S^{d−1}, g = x0: κ A_d(κ)."""
        kappa = np.asarray(params["kappa"], dtype=np.float64)
        return kappa * bessel_ratio(shape[-1] / 2, torch.from_numpy(kappa)).numpy()

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if len(self.event_shape) != 1 or self.event_shape[0] < 2:
            raise ValueError(f"vmf needs event shape (d,) with d ≥ 2, got {self.event_shape}")
        self.dim = self.event_shape[0]
        kappa = self.kappa.detach().cpu().double()
        if not bool(torch.isfinite(kappa).all()) or not bool((kappa > 0).all()):
            raise ValueError("vmf schedule: `kappa` must be finite and > 0 at every step")
        device = self.kappa.device
        self._kappa64 = kappa.to(device)
        self._kl_coef = (kappa * bessel_ratio(self.dim / 2, kappa)).to(device)
        self._log_c = torch.from_numpy(log_vmf_normalizer(self.dim, kappa.numpy())).to(device)
        self._angles = (SphereAngle3(kappa) if self.dim == 3 else GeodesicAngleCDF(kappa.numpy(), self.dim)).to(device)
        self._direction = SphereDirection(self.dim - 2).to(device) if self.dim >= 3 else None

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """d − 1 normals: the angle to x0 and the d − 2 angles of the tangent direction."""
        return (self.dim - 1,)

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _reflect(mu: Tensor, y: Tensor) -> Tensor:
        """Q y with Q = I − 2 u uᵀ / ‖u‖², u = x0 − e_1 (Q = I at x0 = e_1). Q is symmetric and
        orthogonal, Q e_1 = x0, so Q's columns 2..d span x0^⊥ and Q = Qᵀ = Q⁻¹. The frame changes
        continuously with x0 everywhere but at the single point x0 = e_1 (a frame field on the
        sphere must be singular somewhere), so nearby x0 and x̂0 share noise coordinates and the
        kernel KL is continuous in x̂0. ‖u‖² = 2(1 − x0_0) is computed as 2‖x0_{1:}‖²/(1 + x0_0)
        where x0_0 > 0, free of cancellation near e_1.
        """
        head = mu[:, :1]
        rest = mu[:, 1:].pow(2).sum(1, keepdim=True)
        gap = torch.where(head > 0, rest / (1.0 + head.clamp(min=0.0)), 1.0 - head)  # 1 − x0_0
        u = torch.cat([-gap, mu[:, 1:]], dim=1)
        uu = 2.0 * gap
        coef = torch.where(uu > 0, 2.0 * (u * y).sum(1, keepdim=True) / uu.clamp(min=1e-300), 0.0)
        return y - u * coef

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """The tangent chart: normalise(x + Q (0, v)), Q the reflection of x (its columns 2..d span x^⊥)."""
        xd = x.to(torch.float64)
        y = self._reflect(xd, torch.nn.functional.pad(v.to(xd.dtype), (1, 0)))
        return torch.nn.functional.normalize(xd + y, dim=1).to(x.dtype)

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """x = cos θ x0 + sin θ Q[0; v]: θ from ξ_0 (G_t(θ) = Φ(−ξ_0)), v from ξ_{1:} by
        hyperspherical angles; for d = 2, the signed angle φ = sign(ξ_0) θ with F_t(φ) = Φ(ξ_0)."""
        t = self._steps(t, xi.shape[0])
        xi = xi.to(torch.float64)
        mu = x0.to(torch.float64)
        mu = mu / mu.norm(dim=1, keepdim=True)
        if self.dim == 2:
            theta, psi = signed_angle_from_normal(self._angles, xi[:, 0], t)
            v = torch.where(xi[:, :1] >= 0, 1.0, -1.0).to(xi.dtype)
        else:
            theta, psi = angle_from_normal(self._angles, xi[:, 0], t)
            v = self._direction.from_normals(xi[:, 1:])
        cos, sin = cos_sin(theta, psi)
        tangent = self._reflect(mu, torch.cat([torch.zeros_like(v[:, :1]), v], dim=1))
        return (cos[:, None] * mu + sin[:, None] * tangent).to(x0.dtype)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int,
                 generator: torch.Generator | None = None) -> Tensor:
        """The exact inverse of :meth:`from_noise` (``generator`` is not used): y = Q x,
        θ = atan2(‖y_{1:}‖, y_0), π − θ = atan2(‖y_{1:}‖, −y_0), the direction of y_{1:}."""
        t = self._steps(t, x.shape[0])
        mu = x0.to(torch.float64)
        mu = mu / mu.norm(dim=1, keepdim=True)
        y = self._reflect(mu, x.to(torch.float64))
        tang = y[:, 1:]
        tn = torch.linalg.vector_norm(tang, dim=1)
        theta, psi = torch.atan2(tn, y[:, 0]), torch.atan2(tn, -y[:, 0])
        if self.dim == 2:
            z = normal_from_signed_angle(self._angles, theta, psi, t)
            return torch.where(tang >= 0, z[:, None], -z[:, None]).to(x.dtype)
        xi0 = normal_from_angle(self._angles, theta, psi, t)
        # the direction of y_{1:} needs no normalisation (x = ±x0: some direction, finite noise)
        return torch.cat([xi0[:, None], self._direction.to_normals(tang)], dim=1).to(x.dtype)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """log C_d(κ_t) + κ_t <x0, x>."""
        t = self._steps(t, x.shape[0])
        k = self._kappa64[t].to(x.dtype)
        return self._log_c[t].to(x.dtype) + k * (x0 * x).sum(1)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """κ_t A_d(κ_t) (1 − <x0, x̂0>), evaluated as ½‖x0 − x̂0‖² (equal on the sphere, exactly 0
        at x̂0 = x0 and free of cancellation when x̂0 is close to x0)."""
        t = self._steps(t, x0.shape[0])
        return self._kl_coef[t].to(x0.dtype) * self.kl_rescaled(x0, x0_hat, t)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """1 − <x0, x̂0> = ½‖x0 − x̂0‖² for unit vectors (the KL divided by κ_t A_d(κ_t))."""
        return 0.5 * ((x0 - x0_hat) ** 2).sum(1)

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """A_t T(x) = κ_t x."""
        t = self._steps(t, x.shape[0])
        return self._kappa64[t].to(x.dtype)[:, None] * x

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t = −log C_d(κ_t), the same for every x0."""
        t = self._steps(t, x0.shape[0])
        return -self._log_c[t].to(x0.dtype)

    # ------------------------------------------------------------------ tail normalisation
    @property
    def norm_shape(self) -> tuple[int, ...]:
        return (self.event_shape[0] + 1,)

    def norm_quantity(self, s: Tensor) -> Tensor:
        """log‖s_t‖ (the posterior concentration), standardised per step."""
        return torch.log(torch.linalg.vector_norm(s, dim=1).clamp(min=torch.finfo(s.dtype).tiny))

    def normalise_stat(self, s: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """[s/‖s‖, (log‖s‖ − mean_t)/std_t]: the posterior mean direction and its concentration."""
        r = torch.linalg.vector_norm(s, dim=1, keepdim=True).clamp(min=torch.finfo(s.dtype).tiny)
        return torch.cat([s / r, (torch.log(r) - mean[:, None]) / std[:, None]], dim=1)

    def gaussian_snr(self) -> Tensor:
        """κ_t: the SNR of the small-noise Gaussian limit vMF(x0, κ) ≈ x0 + N(0, I/κ) (tangent)."""
        return self.kappa

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform on S^{d−1}: normalised standard normals."""
        z = torch.randn((n, self.dim), generator=generator, device=device, dtype=torch.float64)
        return (z / z.norm(dim=1, keepdim=True)).to(dtype)

    def head(self, raw: Tensor, eps: float = 1e-12) -> Tensor:
        """raw / ‖raw‖, and e_1 where ‖raw‖ < eps (no NaN, also in the gradient)."""
        n = raw.norm(dim=-1, keepdim=True)
        e1 = torch.zeros_like(raw)
        e1[..., 0] = 1.0
        return torch.where(n > eps, raw / n.clamp(min=eps), e1)

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise self._domain_error(what, f"expected vectors of length {self.dim}, got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise self._domain_error(what, "it contains NaN or infinite values")
        tol = 1e-6 if x.dtype == torch.float64 else 1e-4
        dev = (x.to(torch.float64).norm(dim=-1) - 1).abs()
        if bool((dev > tol).any()):
            raise self._domain_error(
                what, f"{int((dev > tol).sum())} vector(s) have norm ≠ 1 (largest |‖x‖ − 1| = "
                      f"{float(dev.max()):.3g}, tolerance {tol:g}); normalise with x / ‖x‖")
