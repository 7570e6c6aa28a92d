"""Small instances of the built-in families and data for them: the fixtures of the contract suite
(:mod:`mstar_engine.testing.family_contract`) and of every test that needs a family.

``toy(family, steps=8, dtype=float64, **shape)`` — a valid instance with a short schedule and a
small event; ``toy_data(fam, n, generator)`` — n in-domain x0 spread over the domain;
``out_of_domain(fam)`` — a batch that ``check_domain`` must reject.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mstar_engine.families import Family, get

F64 = torch.float64


def _kappa(steps: int) -> Tensor:
    """κ_t = 10^{3 − 5t/T}: 1000 at the pseudo step, 0.01 (nearly uniform) at step T."""
    return 10.0 ** torch.linspace(3.0, -2.0, steps + 1, dtype=F64)


def _make_gaussian(cls, steps, dtype):
    """DDPM-style marginals, log-SNR linear from 8 (pseudo step) to −6 (step T); event (3,)."""
    lam = torch.linspace(8.0, -6.0, steps + 1, dtype=F64)
    return cls((3,), mean=torch.sigmoid(lam).sqrt().to(dtype), var=torch.sigmoid(-lam).to(dtype))


def _make_categorical(cls, steps, dtype):
    """β̄_t from 1e-3 (pseudo step) to 0.99 (step T), linear in logit; L = 3 positions, K = 4."""
    logit = torch.linspace(math.log(1e-3 / (1 - 1e-3)), math.log(0.99 / 0.01), steps + 1, dtype=F64)
    return cls((3, 4), bar_beta=torch.sigmoid(logit).to(dtype))


def _make_wishart(cls, steps, dtype, p=3):
    """n_t log-linear from 500 (pseudo step) to p + 2 (step T); ξ_t = sqrt(linspace(1, 1e-3))."""
    df = torch.exp(torch.linspace(math.log(500.0), math.log(p + 2.0), steps + 1, dtype=F64))
    return cls((p, p), df=df.to(dtype), xi=torch.sqrt(torch.linspace(1.0, 1e-3, steps + 1, dtype=F64)).to(dtype))


def _wishart_data(fam, n, g):
    """G Gᵀ + 0.3 I with G a p×p matrix of N(0, 1/p) entries: eigenvalues spread over ~[0.3, 4]."""
    a = torch.randn((n, fam.p, fam.p), generator=g, dtype=F64) / math.sqrt(fam.p)
    x = a @ a.transpose(-1, -2) + 0.3 * torch.eye(fam.p, dtype=F64)
    return (0.5 * (x + x.transpose(-1, -2))).to(dtype=fam.df.dtype, device=fam.df.device)


def _with(shape, value, dtype, *cells):
    """A batch of ``shape`` filled with ``value`` and the (index, value) ``cells`` set."""
    x = torch.full(shape, value, dtype=dtype)
    for index, v in cells:
        x[index] = v
    return x


def _wishart_bad(fam):
    x = torch.eye(fam.p, dtype=fam.df.dtype).repeat(2, 1, 1)
    x[0, 0, 0] = -1.0                                   # a negative eigenvalue
    x[1, 0, 1 if fam.p > 1 else 0] = 0.5 if fam.p > 1 else 0.0  # not symmetric (p = 1: singular)
    return x


#: family name -> (make(cls, steps, dtype, **shape), data(fam, n, generator), out_of_domain(fam))
TOYS = {
    "gaussian": (_make_gaussian,
                 lambda f, n, g: 1.5 * torch.randn((n, *f.event_shape), generator=g, dtype=f.mean.dtype),
                 lambda f: _with((2, *f.event_shape), 0.0, f.mean.dtype, ((0, 0), math.nan), ((1, 0), math.inf))),
    "beta": (lambda cls, steps, dtype: cls((3,), nu=torch.logspace(3, -2, steps + 1, dtype=dtype)),
             lambda f, n, g: 0.01 + 0.98 * torch.rand((n, *f.event_shape), generator=g, dtype=f.nu.dtype),
             lambda f: _with((1, *f.event_shape), 0.5, f.nu.dtype, ((0, 0), 1.5))),
    "dirichlet": (lambda cls, steps, dtype: cls((3,), nu=torch.logspace(3, -2, steps + 1, dtype=dtype)),
                  lambda f, n, g: torch.softmax(1.5 * torch.randn((n, *f.event_shape), generator=g,
                                                                  dtype=f.nu.dtype), dim=-1),
                  lambda f: _with((1, *f.event_shape), 1.0 / f.components, f.nu.dtype,
                                  ((0, 0), 1.0 / f.components + 0.2))),  # sums to 1.2
    "gamma": (lambda cls, steps, dtype: cls((2,), shape=torch.logspace(3, -1, steps + 1, dtype=dtype),
                                            xi=torch.linspace(0, 0.9, steps + 1, dtype=dtype)),
              lambda f, n, g: torch.exp(0.7 * torch.randn((n, *f.event_shape), generator=g, dtype=f.shape.dtype)),
              lambda f: _with((1, *f.event_shape), 1.0, f.shape.dtype, ((0, 0), -0.5))),
    "vmf": (lambda cls, steps, dtype, dim=5: cls((dim,), kappa=_kappa(steps).to(dtype)),
            lambda f, n, g: torch.nn.functional.normalize(torch.randn((n, f.dim), generator=g, dtype=f.kappa.dtype)),
            lambda f: _with((2, f.dim), 0.0, f.kappa.dtype, ((0, 0), 2.0), ((1, slice(None)), 0.1))),
    "von-mises": (lambda cls, steps, dtype, dim=2: cls((dim,), kappa=_kappa(steps).to(dtype)),
                  lambda f, n, g: f.prior_sample(n, g, device=f.kappa.device, dtype=f.kappa.dtype),
                  lambda f: _with((2, *f.event_shape), 0.0, f.kappa.dtype, ((0, 0), 4.0), ((1, 0), math.pi))),
    "categorical": (_make_categorical,
                    lambda f, n, g: f.prior_sample(n, g, device=f.bar_beta.device, dtype=f.bar_beta.dtype),
                    lambda f: _with((2, *f.event_shape), 0.0, f.bar_beta.dtype, ((0, slice(None), 0), 1.0),
                                    ((0, 0, 1), 1.0), ((1, slice(None), 1), 1.0), ((1, 0, 1), -1.0))),
    "wishart": (_make_wishart, _wishart_data, _wishart_bad),
}


def toy(family: str | type[Family], steps: int = 8, dtype: torch.dtype = F64, **shape) -> Family:
    cls = get(family)
    return TOYS[cls.name][0](cls, steps, dtype, **shape)


def toy_data(fam: Family, n: int, generator: torch.Generator | None = None) -> Tensor:
    return TOYS[fam.name][1](fam, n, generator)


def out_of_domain(fam: Family) -> Tensor:
    return TOYS[fam.name][2](fam)
