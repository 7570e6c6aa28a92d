"""Consistency distillation (:mod:`mstar_engine.distill.consistency`) against oracles.

The oracle teacher: data x0 ~ N(μ, diag s²) in 2-D under a Gaussian family with DDPM-like
marginals (T = 32), where the exact denoiser E[x0 | x_t] is Gaussian conditioning,
x̂0 = μ + k_t (x_t − m_t μ), k_t = m_t s² / (m_t² s² + v_t). Its ρ = 1 block from a to b is then an
affine map of x_a, so the teacher's solution map F(x, g_n) is affine too and is composed here from
m_t, v_t alone (:func:`ddim_solution_map`), independently of the code under test.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mstar_engine.distill.consistency import (ConsistencyFunction, boundary_coefficients, consistency_grid,
                                              consistency_loss, consistency_stage, consistency_terms,
                                              interval_weights, teacher_step)
from mstar_engine.families import get
from mstar_engine.families.base import as_steps
from mstar_engine.networks import build_mlp_denoiser
from mstar_engine.sampling import sample, step_grid
from mstar_engine.train.checkpoint import latest_checkpoint, load_checkpoint
from tests.families.fixtures import toy

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these tensors are small, and on busy cores two threads spin-wait for
    each other (several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
T, N = 32, 8
MU, SD = torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([0.5, 0.3], dtype=F64)


def family(dtype=F64):
    """DDPM-like marginals: log-SNR linear from 8 (pseudo step) to −6 (step T), m² + v = 1."""
    lam = torch.linspace(8.0, -6.0, T + 1, dtype=F64)
    return get("gaussian")((2,), mean=torch.sigmoid(lam).sqrt().to(dtype), var=torch.sigmoid(-lam).to(dtype))


class Posterior(nn.Module):
    """The exact teacher E[x0 | x_t] for x0 ~ N(μ, diag s²), with the denoiser's signature."""

    def __init__(self, fam, mu=MU, sd=SD):
        super().__init__()
        self.register_buffer("mu", mu.clone())
        self.register_buffer("s2", sd.clone() ** 2)
        self.register_buffer("m", fam.mean.double().clone())
        self.register_buffer("v", fam.var.double().clone())

    def forward(self, s_t, x, t, labels=None, guidance=None):
        t = as_steps(t, x.shape[0], x.device)
        m, v = self.m[t][:, None], self.v[t][:, None]
        k = m * self.s2 / (m * m * self.s2 + v)
        return (self.mu + k * (x.double() - m * self.mu)).to(x.dtype)


def ddim_solution_map(fam, grid, mu=MU, sd=SD):
    """F(x, g_n) = A_n x + B_n, per coordinate, from the per-block affine maps
    x_b = m_b x̂0 + sqrt(v_b/v_a) (x_a − m_a x̂0) with x̂0 = k_a x_a + c_a, composed down to step 0."""
    m, v, s2 = fam.mean.double(), fam.var.double(), sd ** 2
    A, B = [torch.ones(2, dtype=F64)], [torch.zeros(2, dtype=F64)]
    for a, b in zip(grid[1:], grid[:-1]):
        k = m[a] * s2 / (m[a] ** 2 * s2 + v[a])
        c = mu - k * m[a] * mu
        r = math.sqrt(v[b] / v[a])
        alpha, beta = r + (m[b] - r * m[a]) * k, (m[b] - r * m[a]) * c
        A.append(A[-1] * alpha)
        B.append(A[-2] * beta + B[-1])
    return dict(zip(grid, zip(A, B)))


def solution_map(fam, teacher, grid):
    """F(x, t) by running teacher_step block by block down the grid to 0 (per-example t on it)."""
    prev = torch.zeros(T + 1, dtype=torch.long)
    prev[grid[1:]] = torch.tensor(grid[:-1])

    def F(s, x, t, labels=None, guidance=None):
        t, x = as_steps(t, x.shape[0], x.device).clone(), x.clone()
        while bool((t > 0).any()):
            rows = (t > 0).nonzero().squeeze(1)
            t_to = prev[t[rows]]
            x[rows] = teacher_step(fam, teacher, x[rows], t[rows], t_to)
            t[rows] = t_to
        return x
    return F


def test_grid_is_the_step_grid_ascending_from_zero():
    assert consistency_grid(T, N) == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    assert consistency_grid(10, 3) == [0, *sorted(step_grid(10, 3))] and consistency_grid(10, 1) == [0, 10]
    with pytest.raises(ValueError):
        consistency_grid(8, 9)


def test_teacher_chain_down_the_grid_is_the_closed_form_ddim_solution_map():
    fam = family()
    teacher, grid = Posterior(fam), consistency_grid(T, N)
    F, exact = solution_map(fam, teacher, grid), ddim_solution_map(fam, grid)
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(512, 2, generator=g, dtype=F64)
    t = torch.tensor(grid)[torch.randint(1, N + 1, (512,), generator=g)]  # mixed steps in one batch
    state = torch.get_rng_state()
    got = F(None, x, t)
    assert torch.equal(torch.get_rng_state(), state)  # deterministic: the global generator is untouched
    A, B = torch.stack([exact[int(u)][0] for u in t]), torch.stack([exact[int(u)][1] for u in t])
    # float64: ≤ 8 blocks of ≤ 4 steps leave round-off ~1e-15 on |x| ≲ 10; 1e-10 leaves room only for that
    torch.testing.assert_close(got, A * x + B, rtol=0, atol=1e-10)
    # sanity of the oracle (so the comparison can fail): a step-by-step re-evaluated teacher
    # (not the block rule) lands elsewhere
    one_step = solution_map(fam, teacher, list(range(T + 1)))(None, x, t)
    assert (one_step - (A * x + B)).abs().max() > 1e-3
    # a single block from a to b (vectorised over different starts) is the telescoped ρ = 1 map
    a, b = torch.tensor([32, 20, 20, 4]), torch.tensor([28, 0, 12, 0])
    x4 = x[:4]
    x0 = teacher(None, x4, a)
    m, v = fam.mean[:, None], fam.var[:, None]
    direct = m[b] * x0 + (v[b] / v[a]).sqrt() * (x4 - m[a] * x0)
    torch.testing.assert_close(teacher_step(fam, teacher, x4, a, b), direct, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        teacher_step(fam, teacher, x4, a, a)


def test_loss_vanishes_at_the_teachers_solution_map_and_not_off_it():
    fam = family()
    teacher, grid = Posterior(fam), consistency_grid(T, N)
    F = solution_map(fam, teacher, grid)
    for seed in range(3):
        x0 = MU + SD * torch.randn(256, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
        loss = consistency_loss(fam, F, F, teacher, x0, grid, torch.Generator().manual_seed(10 + seed))
        assert loss.ndim == 0 and float(loss) < 1e-20  # exactly 0: both sides run the same float64 blocks
        shifted = lambda s, x, t, labels=None: F(s, x, t) + 0.01  # noqa: E731
        off = consistency_loss(fam, shifted, F, teacher, x0, grid, torch.Generator().manual_seed(10 + seed))
        assert float(off) == pytest.approx(1e-4, rel=1e-6)  # 0.01² per coordinate, every example
        wrong = Posterior(fam, mu=MU + 0.2)  # a teacher other than the one F belongs to
        assert float(consistency_loss(fam, F, F, wrong, x0, grid, torch.Generator().manual_seed(seed))) > 1e-4


@pytest.mark.parametrize("kind, power", [("inverse-step", 1.0), ("inverse-sqrt-step", 0.5)])
def test_interval_weights_are_inverse_noise_steps_with_mean_one(kind, power):
    """λ_n ∝ (σ_{g_n} − σ_{g_{n−1}})^(−power) with σ = sqrt(v)/m, written out from the schedule."""
    fam, grid = family(), consistency_grid(T, N)
    sigma = [math.sqrt(float(fam.var[t])) / float(fam.mean[t]) for t in range(T + 1)]
    raw = [(sigma[b] - sigma[a]) ** -power for a, b in zip(grid[:-1], grid[1:])]
    expected = torch.tensor(raw, dtype=F64) * len(raw) / sum(raw)
    w = interval_weights(fam, grid, kind)
    assert torch.allclose(w, expected, rtol=1e-12) and float(w.mean()) == pytest.approx(1.0)
    assert bool((w[:-1] > w[1:]).all())  # the small steps near the data weigh most
    assert torch.equal(interval_weights(fam, grid, "uniform"), torch.ones(N, dtype=F64))
    with pytest.raises(ValueError, match="affine in x0"):
        interval_weights(toy("beta"), [0, 1, 2], kind)


def test_weighted_terms_are_each_examples_loss_times_its_intervals_weight():
    """The same draws (one generator seed) with and without weights: the ratio of each example's
    term is the weight of the interval its step lies in."""
    fam, grid = family(), consistency_grid(T, N)
    teacher = Posterior(fam)
    F = solution_map(fam, teacher, grid)
    shifted = lambda s, x, t, labels=None: F(s, x, t) + 0.01 * x  # noqa: E731  (a loss that varies by example)
    x0 = MU + SD * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    w = interval_weights(fam, grid, "inverse-step")
    plain = consistency_terms(fam, shifted, F, teacher, x0, grid, torch.Generator().manual_seed(2))
    weighted = consistency_terms(fam, shifted, F, teacher, x0, grid, torch.Generator().manual_seed(2), weights=w)
    n = torch.randint(1, N + 1, (64,), generator=torch.Generator().manual_seed(2))  # the terms' own first draw
    assert torch.allclose(weighted, plain * w[n - 1], rtol=1e-12)


class _TailUser(nn.Module):
    """Stands for a denoiser that reads the tail statistic."""
    uses_tail = True


def test_boundary_parametrisation():
    fam = family()
    c_skip, c_out = boundary_coefficients(fam)
    assert c_skip.dtype == c_out.dtype == F64 and c_skip.shape == c_out.shape == (T + 1,)
    assert c_skip[0] == 1 and c_out[0] == 0
    sigma = (fam.var / fam.mean ** 2).sqrt()  # σ_t = sqrt(v_t)/m_t, σ_min = σ_0
    for t in (1, 7, T):
        d, s = float(sigma[t] - sigma[0]), float(sigma[t])  # floats: pytest ≥ 9.2 does not take 0-d tensors
        assert float(c_skip[t]) == pytest.approx(0.25 / (d ** 2 + 0.25), rel=1e-12)
        assert float(c_out[t]) == pytest.approx(d * 0.5 / math.sqrt(0.25 + s ** 2), rel=1e-12)
    torch.manual_seed(0)
    net = build_mlp_denoiser(fam, None, "state", {"hidden": 16, "blocks": 1, "time_dim": 8}).double()
    f = ConsistencyFunction(net)
    assert f.denoiser is net
    x = torch.randn(6, 2, dtype=F64)
    assert torch.equal(f(None, x, 0), x)  # the boundary, for any network
    t = torch.tensor([0, 3, 0, T, 1, 0])
    out = f(None, x, t)
    inside = t > 0
    assert torch.equal(out[~inside], x[~inside])
    m = fam.mean[t[inside]][:, None]
    # on the x0 network read as the preconditioned D = e_skip x/m + e_out F (σ_min = 0 in e):
    # f = c_skip x/m + c_out F; with σ_0 = 0 here, e = c and f = D itself
    s_in = sigma[t[inside]][:, None]
    e_skip, e_out = 0.25 / (s_in ** 2 + 0.25), s_in * 0.5 / torch.sqrt(s_in ** 2 + 0.25)
    d = net(None, x[inside], t[inside])
    raw = (d - e_skip * x[inside] / m) / e_out
    manual = c_skip[t[inside]][:, None] * x[inside] / m + c_out[t[inside]][:, None] * raw
    torch.testing.assert_close(out[inside], manual, rtol=1e-9, atol=1e-9)
    if float(sigma[0]) == 0.0:
        torch.testing.assert_close(out[inside], d, rtol=1e-9, atol=1e-9)

    def refuse(*args, **kwargs):
        raise AssertionError("no network call at step 0")
    assert torch.equal(ConsistencyFunction(refuse, fam)(None, x, 0), x)
    # a family not affine in x0: f = D at t >= 1, the state at t = 0
    beta = toy("beta", steps=8)
    c_skip, c_out = boundary_coefficients(beta)
    assert c_skip.tolist() == [1.0] + [0.0] * 8 and c_out.tolist() == [0.0] + [1.0] * 8
    net = build_mlp_denoiser(beta, None, "state", {"hidden": 16, "blocks": 1, "time_dim": 8}).double()
    xb = torch.rand(4, 3, dtype=F64) * 0.8 + 0.1
    tb = torch.tensor([0, 2, 8, 0])
    out = ConsistencyFunction(net)(None, xb, tb)
    assert torch.equal(out[[0, 3]], xb[[0, 3]])
    torch.testing.assert_close(out[[1, 2]], net(None, xb[[1, 2]], tb[[1, 2]]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="state"):
        ConsistencyFunction(_TailUser(), beta)


def multistep_moments(fam, F_affine, taus):
    """Mean and variance per coordinate of Song et al.'s multistep sampler with an affine F:
    y = F(x_T, T), x_T ~ N(0, I); then x_τ ~ q_τ(· | y) = N(m_τ y, v_τ), y = F(x_τ, τ)."""
    A, B = F_affine[taus[0]]
    mean, var = B.clone(), A ** 2
    for tau in taus[1:]:
        A, B = F_affine[tau]
        mean, var = A * fam.mean[tau] * mean + B, A ** 2 * (fam.mean[tau] ** 2 * var + fam.var[tau])
    return mean, var


def test_multistep_consistency_sampling_is_the_rho_zero_sampler():
    fam = family()
    teacher, grid = Posterior(fam), consistency_grid(T, N)
    F = solution_map(fam, teacher, grid)
    taus = step_grid(T, 4)  # [32, 24, 16, 8]: evaluations on the consistency grid
    mean, var = multistep_moments(fam, ddim_solution_map(fam, grid), taus)
    n = 20_000
    drawn = sample(F, fam, n, taus, rho=torch.zeros(T + 1), generator=torch.Generator().manual_seed(1), dtype=F64)
    g = torch.Generator().manual_seed(2)  # the published algorithm, written out
    y = F(None, fam.prior_sample(n, g, dtype=F64), T)
    for tau in taus[1:]:
        y = F(None, fam.sample(y, tau, g), tau)
    coupled = sample(F, fam, n, taus, rho=torch.ones(T + 1), generator=torch.Generator().manual_seed(1), dtype=F64)

    def within(x):  # 5 standard errors: mean sd/sqrt(n), variance var·sqrt(2/n) (Gaussian laws)
        return bool(((x.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
                    and ((x.var(0) - var).abs() < 5 * var * math.sqrt(2 / n)).all())
    assert within(drawn) and within(y)
    assert not within(coupled)  # the test can fail: the ρ = 1 chain between grid points is another law


def test_a_short_run_lowers_the_loss_and_moves_one_step_samples_toward_the_data(tmp_path):
    fam = family(torch.float32)
    teacher, grid = Posterior(fam), consistency_grid(T, N)
    torch.manual_seed(0)
    student = build_mlp_denoiser(fam, None, "state", {"hidden": 64, "blocks": 2, "time_dim": 16})
    data = (MU + SD * torch.randn(4096, 2, generator=torch.Generator().manual_seed(3), dtype=F64)).float()
    evaluation = data[:1024]

    def batches(start):
        while True:
            yield data[torch.arange(start, start + 128) % data.shape[0]]
            start += 128

    @torch.no_grad()
    def measure(f_student, f_target):
        loss = consistency_loss(fam, f_student, f_target, teacher, evaluation, grid, torch.Generator().manual_seed(5))
        x = sample(f_target, fam, 4000, [T], generator=torch.Generator().manual_seed(6)).double()
        return float(loss), float((x.mean(0) - MU).abs().sum() + (x.var(0) - SD ** 2).abs().sum())

    initial = ConsistencyFunction(student).eval()
    loss_0, gap_0 = measure(initial, initial)
    f, seconds = consistency_stage(SimpleNamespace(family=fam), teacher, student, batches,
                                   SimpleNamespace(steps_per_stage=250, lr=1e-3, batch_size=128), tmp_path / "ckpt",
                                   tmp_path / "distill.jsonl", teacher_steps=N, evaluations=1, ema_target=0.9,
                                   log=lambda _: None)
    loss_1, gap_1 = measure(ConsistencyFunction(student).eval(), f)
    assert not f.training and seconds > 0
    # seen: the loss falls ~30x (0.027 -> 8e-4) and the moment gap ~13x (1.77 -> 0.14) in 250 steps
    assert loss_1 < loss_0 / 5, (loss_0, loss_1)
    assert gap_1 < gap_0 / 4, (gap_0, gap_1)


class Crash(Exception):
    pass


def run_stage(out, crash_at=None, total=12, weight="uniform"):
    fam = family(torch.float32)
    torch.manual_seed(0)
    student = build_mlp_denoiser(fam, None, "state", {"hidden": 16, "blocks": 1, "time_dim": 8}, num_classes=2)
    data = (MU + SD * torch.randn(256, 2, generator=torch.Generator().manual_seed(3), dtype=F64)).float()
    labels = torch.arange(256) % 2

    def batches(start):
        while True:
            rows = torch.arange(start, start + 16) % 256
            yield data[rows], labels[rows]
            start += 16

    def log(line):
        if crash_at is not None and f"step {crash_at}/" in line:
            raise Crash
    f, _ = consistency_stage(SimpleNamespace(family=fam), Posterior(fam), student, batches,
                             SimpleNamespace(steps_per_stage=total, lr=1e-3, batch_size=16), out / "ckpt",
                             out / "distill.jsonl", teacher_steps=4, evaluations=2, checkpoint_every=4, log_every=1,
                             log=log, weight=weight)
    return student, f


def test_resume_after_a_crash_is_bit_exact(tmp_path):
    ref_student, ref_f = run_stage(tmp_path / "ref")
    with pytest.raises(Crash):
        run_stage(tmp_path / "crash", crash_at=6)
    assert latest_checkpoint(tmp_path / "crash" / "ckpt").name == "step-00000004.pt"
    student, f = run_stage(tmp_path / "crash")
    for a, b in ((ref_student, student), (ref_f.denoiser, f.denoiser)):
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    # the target is an EMA distinct from the student, so comparing it tests its own restore
    assert not all(torch.equal(ref_f.denoiser.state_dict()[k], v) for k, v in ref_student.state_dict().items())
    state = load_checkpoint(latest_checkpoint(tmp_path / "crash" / "ckpt"))
    assert state["step"] == 12 and state["complete"] and state["consistency"] is True
    assert state["evaluations"] == 2 and state["teacher_evaluations"] == 4 and state["event_shape"] == [2]
    assert torch.equal(state["sampling_rho"], torch.zeros(T + 1, dtype=F64)) and state["seconds"] > 0
    assert all(torch.equal(state["target"][k], v) for k, v in f.denoiser.state_dict().items())
    lines = (tmp_path / "crash" / "distill.jsonl").read_text().splitlines()
    assert lines == [line for line in lines if '"method": "consistency"' in line] and len(lines) == 12


def test_a_weighted_stage_records_its_weight_and_a_uniform_one_keeps_the_old_fingerprint(tmp_path):
    """The weight is part of the stage's fingerprint only when it is not uniform, so stages written
    before the setting existed stay resumable; a weighted stage trains to different weights."""
    uniform, _ = run_stage(tmp_path / "uniform", total=4)
    weighted, _ = run_stage(tmp_path / "weighted", total=4, weight="inverse-step")
    prints = {name: load_checkpoint(latest_checkpoint(tmp_path / name / "ckpt"))["fingerprint"]
              for name in ("uniform", "weighted")}
    assert "weight" not in prints["uniform"] and prints["weighted"]["weight"] == "inverse-step"
    assert any(not torch.equal(a, b) for a, b in zip(uniform.state_dict().values(), weighted.state_dict().values()))
