"""von Mises–Fisher family on the sphere S^{d-1}, any d ≥ 2 (MATH.md §4; notes §3.4).

    q_t(x | x0) = C_d(κ_t) exp(κ_t <x0, x>),   C_d(κ) = κ^{d/2-1} / ((2π)^{d/2} I_{d/2-1}(κ)),

a density with respect to the surface measure. T(x) = x, A_t = κ_t, f(x0) = x0; Ω_t = −log C_d(κ_t)
does not depend on x0, and c_t(x) = 0. KL(q_t(x0) ‖ q_t(x̂0)) = κ_t A_d(κ_t) (1 − <x0, x̂0>) with
A_d(κ) = I_{d/2}(κ) / I_{d/2-1}(κ) (:func:`bessel_ratio`).

Noise map (noise_shape (d,)). Write x = cos θ x0 + sin θ v with θ ∈ [0, π] the geodesic angle to
x0 and v a unit tangent vector at x0. Under q_t, θ and v are independent, θ has density
∝ exp(κ cos θ) sin^{d-2} θ and v is uniform on the unit sphere of the tangent space x0^⊥.

* ξ_0 ↦ θ by the inverse CDF: G(θ) = P(Θ ≤ θ) = Φ(−ξ_0), so large ξ_0 means x close to x0
  (w = <x, x0> = cos θ is increasing in ξ_0). Each half is read from its own tail, in log space:
  log G = log Φ(−ξ_0) for ξ_0 ≥ 0 and log S = log(1 − G) = log Φ(ξ_0) for ξ_0 < 0, so neither tail
  loses precision. For d = 3 in closed form (:class:`SphereAngle3`,
  w = 1 + log(u + (1 − u)e^{−2κ})/κ with u = Φ(ξ_0)); otherwise from per-step tables built at
  construction by Gauss–Legendre quadrature (:class:`GeodesicAngleCDF`).
* ξ_{1:d} ↦ v: the Gaussian vector ξ_{1:d} ∈ R^{d-1}, normalised, in an orthonormal basis of
  x0^⊥ given by the Householder reflection Q (symmetric, orthogonal, Q e_1 = x0).
* ``to_noise`` recovers θ and v exactly; the radius of the tangent Gaussian is lost, so it draws
  r ~ χ(d−1) (the norm of a fresh Gaussian) and returns r v: exactly N(0, I) for exact samples
  (``inverse_uses_aux`` = True).

Computations of the noise map run in float64 and return the input dtype.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mstar_engine.families.base import Family, register
from mstar_engine.numerics.bessel import bessel_ratio, log_vmf_normalizer
from mstar_engine.numerics.geodesic import GeodesicAngleCDF, SphereAngle3, ndtri_tail


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
    inverse_uses_aux = True
    schedules = ("vmf-spline",)
    kl_snr_shape = (3,)

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

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _reflect(mu: Tensor, y: Tensor) -> Tensor:
        """Q y with Q = −s (I − 2 u uᵀ / ‖u‖²), u = x0 + s e_1, s = sign(x0_0) (s = 1 at 0).
        Q is symmetric and orthogonal, Q e_1 = x0, so Q's columns 2..d span x0^⊥ and Q = Qᵀ = Q⁻¹.
        """
        s = torch.where(mu[:, :1] >= 0, 1.0, -1.0).to(mu.dtype)
        u = mu.clone()
        u[:, :1] = u[:, :1] + s
        uu = 2.0 * (1.0 + mu[:, :1].abs())
        return -s * (y - u * (2.0 * (u * y).sum(1, keepdim=True) / uu))

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """x = cos θ x0 + sin θ Q[0; g/‖g‖] with G_t(θ) = Φ(−ξ_0) and g = ξ_{1:d}.

        The angle comes from the tail of ξ_0's own sign: G = Φ(−ξ_0) for ξ_0 ≥ 0 (θ below the
        median), S = 1 − G = Φ(ξ_0) otherwise, both as log Φ(−|ξ_0|).
        """
        t = self._steps(t, xi.shape[0])
        xi = xi.to(torch.float64)
        mu = x0.to(torch.float64)
        mu = mu / mu.norm(dim=1, keepdim=True)
        xi0 = xi[:, 0]
        theta, psi = self._angles.angle(xi0 >= 0, torch.special.log_ndtr(-xi0.abs()), t)
        small = theta <= psi  # take cos and sin from the smaller of θ and ψ = π − θ
        cos = torch.where(small, torch.cos(theta), -torch.cos(psi))[:, None]
        sin = torch.where(small, torch.sin(theta), torch.sin(psi))[:, None]
        g = xi[:, 1:]
        gn = g.norm(dim=1, keepdim=True)
        e1 = torch.nn.functional.one_hot(torch.zeros_like(t), self.dim - 1).to(g.dtype)
        v = torch.where(gn > 0, g / gn.clamp(min=1e-300), e1)
        tangent = self._reflect(mu, torch.cat([torch.zeros_like(g[:, :1]), v], dim=1))
        return (cos * mu + sin * tangent).to(x0.dtype)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int,
                 generator: torch.Generator | None = None) -> Tensor:
        """ξ_0 = ±Φ⁻¹(tail) from θ = atan2(‖y_{1:}‖, y_0), ψ = atan2(‖y_{1:}‖, −y_0), y = Q x;
        ξ_{1:} = r y_{1:}/‖y_{1:}‖ with an auxiliary radius r ~ χ(d−1) drawn from ``generator``."""
        t = self._steps(t, x.shape[0])
        mu = x0.to(torch.float64)
        mu = mu / mu.norm(dim=1, keepdim=True)
        y = self._reflect(mu, x.to(torch.float64))
        tang = y[:, 1:]
        tn = tang.norm(dim=1, keepdim=True)
        theta, psi = torch.atan2(tn[:, 0], y[:, 0]), torch.atan2(tn[:, 0], -y[:, 0])
        lower, log_tail = self._angles.tail(theta, psi, t)
        z = -ndtri_tail(log_tail)  # ≥ 0
        xi0 = torch.where(lower, z, -z)
        aux = torch.randn(tang.shape, generator=generator, dtype=torch.float64, device=x.device)
        r = aux.norm(dim=1, keepdim=True)
        xi_t = torch.where(tn > 0, r * tang / tn.clamp(min=1e-300), aux)
        return torch.cat([xi0[:, None], xi_t], dim=1).to(x.dtype)

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
