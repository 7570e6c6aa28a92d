"""Building the process of a spec: every shipped spec builds; the learned coupling falls back to
the ddpm rule (with a note) where the kernel KL is intractable; ddpm ρ matches ρ* = sqrt(SNR_t/SNR_{t-1})."""
from pathlib import Path

import attrs
import pytest
import torch

from mstar_engine.data.catalog import DATASETS
from mstar_engine.app.model import build_process
from mstar_engine.spec import load_spec
from mstar_engine.spec.resolve import resolve

SPECS = sorted(Path(__file__).parents[2].joinpath("specs").glob("*.toml"))


def resolved(path):
    spec = resolve(load_spec(path).spec)
    info = DATASETS[spec.data.name]
    return spec, info.event_shape(spec.data.dim, spec.data.image_size)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_builds(path):
    spec, shape = resolved(path)
    process = build_process(spec.process, shape)
    rho = process.rho()
    assert rho.shape == (spec.process.steps + 1,)
    assert bool(((rho >= 0) & (rho <= 1)).all())
    assert process.family.steps == spec.process.steps


def test_learned_coupling_falls_back_to_ddpm_for_auxiliary_inverses(monkeypatch):
    """Every built-in family has a tractable kernel KL; a family whose inverse noise map draws
    auxiliary variables (Beta made to pretend so here) falls back to the ddpm rule."""
    from mstar_engine.families.beta import Beta
    monkeypatch.setattr(Beta, "inverse_uses_aux", True)
    spec, shape = resolved(SPECS[0].parent / "beta.toml")
    proc = attrs.evolve(spec.process, coupling=attrs.evolve(spec.process.coupling, kind="learned"),
                        inputs="tail+state")
    process = build_process(proc, shape)
    assert process.coupling_kind == "ddpm" and "ddpm rule" in process.notes[0]
    ddpm = build_process(attrs.evolve(proc, coupling=attrs.evolve(proc.coupling, kind="ddpm")), shape)
    assert torch.equal(process.rho(), ddpm.rho())
    monkeypatch.undo()
    assert build_process(proc, shape).coupling_kind == "learned"  # Beta's map is a bijection


def test_ddpm_rule_with_gaussian_cosine():
    spec, shape = resolved(SPECS[0].parent / "gaussian.toml")
    process = build_process(spec.process, shape)
    snr = process.family.mean ** 2 / process.family.var
    assert torch.allclose(process.rho()[2:], (snr[2:] / snr[1:-1]).sqrt().clamp(max=1.0), atol=1e-12)


def test_gaussian_ddpm_coupling_uses_the_schedules_closed_form_snr():
    """ρ* comes from the schedule's Gaussian-equivalent SNR (for cosine: the closed-form ᾱ), not
    from m_t²/v_t recomputed from the family's arrays, which differs in the last bit."""
    from mstar_engine.schedules import gaussian_equivalent_snr
    from mstar_engine.schedules.coupling import ddpm_rho
    spec, shape = resolved(SPECS[0].parent / "gaussian.toml")
    proc = attrs.evolve(spec.process, schedule=attrs.evolve(spec.process.schedule, name="cosine"),
                        coupling=attrs.evolve(spec.process.coupling, kind="ddpm"))
    T = proc.steps
    assert torch.equal(build_process(proc, shape).rho(), ddpm_rho(gaussian_equivalent_snr("cosine", T), T))
