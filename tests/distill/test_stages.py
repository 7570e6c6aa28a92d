"""Stage step counts of progressive distillation (``derive_stages``) and the ``[distill]`` section
of a spec: its checks (``mstar validate``) and how ``resolve`` fills in its ``auto`` values."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.distill import DistillError, derive_stages
from mstar_engine.spec import SpecError, load_spec_text
from mstar_engine.spec.resolve import resolve


# --- derive_stages -------------------------------------------------------------------------------

@pytest.mark.parametrize(("steps", "to", "expected"), [
    (64, 8, [32, 16, 8]),
    (64, 32, [32]),
    (64, 1, [32, 16, 8, 4, 2, 1]),
    (16, 4, [8, 4]),
    (12, 3, [6, 3]),  # not a power of two itself: 12 / 2^2
    (1000, 125, [500, 250, 125]),
])
def test_to_halves_until_reached(steps, to, expected):
    assert derive_stages(steps, to=to) == expected


def test_explicit_stages_are_returned_as_given():
    assert derive_stages(64, stages=[32, 16]) == [32, 16]
    assert derive_stages(64, stages=[32, 16, 8]) == derive_stages(64, to=8)
    assert derive_stages(10, stages=[5]) == [5]


@pytest.mark.parametrize("to", [12, 3, 5, 48, 0])
def test_to_not_a_power_of_two_divisor_names_the_valid_options(to):
    with pytest.raises(DistillError) as info:
        derive_stages(64, to=to)
    message = str(info.value)
    assert str(to) in message
    assert "32, 16, 8, 4, 2, 1" in message  # every valid choice, in order


@pytest.mark.parametrize("to", [64, 65, 128])
def test_to_at_least_the_steps_is_refused(to):
    with pytest.raises(DistillError) as info:
        derive_stages(64, to=to)
    message = str(info.value)
    assert "fewer" in message and "64" in message
    assert "32" in message  # still says what would work


def test_exactly_one_of_to_and_stages():
    with pytest.raises(DistillError, match="exactly one"):
        derive_stages(64)
    with pytest.raises(DistillError, match="exactly one"):
        derive_stages(64, to=8, stages=[32, 16, 8])


def test_empty_stages_is_refused():
    with pytest.raises(DistillError, match="empty"):
        derive_stages(64, stages=[])


@pytest.mark.parametrize(("stages", "which", "previous", "expected"), [
    ([16], "stage 1", 64, "use 32"),
    ([32, 8], "stage 2", 32, "use 16"),
    ([32, 16, 8, 2], "stage 4", 8, "use 4"),
    ([32, 32], "stage 2", 32, "use 16"),
])
def test_stages_not_halving_say_which_and_what_to_use(stages, which, previous, expected):
    with pytest.raises(DistillError) as info:
        derive_stages(64, stages=stages)
    message = str(info.value)
    assert which in message
    assert f"previous {previous}" in message
    assert expected in message


@pytest.mark.parametrize("steps", [63, 7, 1001])
def test_odd_steps_cannot_be_halved(steps):
    with pytest.raises(DistillError) as info:
        derive_stages(steps, to=1)
    message = str(info.value)
    assert "odd" in message and str(steps) in message
    with pytest.raises(DistillError):
        derive_stages(steps, stages=[steps // 2])


def test_distill_error_is_a_value_error():
    """Callers that catch ValueError (spec problems) also catch it."""
    assert issubclass(DistillError, ValueError)


# --- the [distill] section of a spec -------------------------------------------------------------

def spec_text(family: str = "dirichlet", distill: str = "to = 8", extra: str = "") -> str:
    data = {"dirichlet": "dirichlet-mixture", "gaussian": "gaussian-mixture"}[family]
    return (f'[experiment]\nname = "d"\n\n[process]\nfamily = "{family}"\nsteps = 64\n{extra}\n'
            f'[data]\nname = "{data}"\n\n[distill]\n{distill}\n')


def validate(tmp_path, text: str):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def test_validate_accepts_a_distill_section(tmp_path):
    result = validate(tmp_path, spec_text())
    assert result.exit_code == 0, result.output
    result = validate(tmp_path, spec_text(distill="stages = [32, 16]\nsteps_per_stage = 10"))
    assert result.exit_code == 0, result.output


def test_validate_refuses_the_landing_target_off_the_gaussian_family(tmp_path):
    result = validate(tmp_path, spec_text("dirichlet", 'to = 8\ntarget = "landing"'))
    assert result.exit_code == 2, result.output
    assert "distill.target" in result.output
    assert "landing" in result.output and "gaussian" in result.output.lower()


def test_validate_refuses_landing_for_a_gaussian_reading_the_tail(tmp_path):
    result = validate(tmp_path, spec_text("gaussian", 'to = 8\ntarget = "landing"', 'inputs = "tail+state"'))
    assert result.exit_code == 2, result.output
    assert "distill.target" in result.output


def test_validate_accepts_landing_for_a_gaussian_on_the_state(tmp_path):
    text = spec_text("gaussian", 'to = 8\ntarget = "landing"', 'inputs = "state"\n[process.coupling]\nkind = "ddpm"\n')
    result = validate(tmp_path, text)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("distill", "needles"), [
    ("to = 12", ["distill.to", "32, 16, 8, 4, 2, 1"]),
    ("to = 64", ["distill.to", "fewer"]),
    ("stages = [32, 8]", ["distill.stages", "stage 2", "use 16"]),
    ("steps_per_stage = 10", ["distill", "exactly one"]),
    ("to = 8\nstages = [32, 16, 8]", ["distill", "exactly one"]),
    ('to = 8\ncoupling = "ddpm"', ["distill.coupling"]),
    ('to = 8\nweighting = "min-snr"', ["distill.weighting"]),
])
def test_validate_reports_bad_distill_settings(tmp_path, distill, needles):
    result = validate(tmp_path, spec_text(distill=distill))
    assert result.exit_code == 2, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


def test_bad_to_is_a_spec_error_with_the_options():
    with pytest.raises(SpecError) as info:
        load_spec_text(spec_text(distill="to = 3"))
    assert "32, 16, 8, 4, 2, 1" in str(info.value)


def resolved(text: str):
    return resolve(load_spec_text(text).spec)


def test_resolve_gaussian_state_input_gets_deterministic_coupling_and_landing():
    spec = resolved(spec_text("gaussian", "to = 8", 'inputs = "state"\n[process.coupling]\nkind = "ddpm"\n'))
    assert spec.process.inputs == "state"
    assert spec.distill.coupling == "deterministic"
    assert spec.distill.target == "landing"
    assert spec.distill.stages == [32, 16, 8]


@pytest.mark.parametrize(("family", "extra"), [
    ("dirichlet", ""),                                                      # independent: inputs = tail
    ("dirichlet", '[process.coupling]\nkind = "deterministic"\n'),          # tail+state
    ("gaussian", '[process.coupling]\nkind = "ddpm"\n'),                    # Gaussian, but tail+state
    ("gaussian", 'inputs = "tail"\n'),
])
def test_resolve_tail_reading_family_gets_model_coupling_and_teacher_target(family, extra):
    spec = resolved(spec_text(family, "to = 8", extra))
    assert "tail" in spec.process.inputs
    assert spec.distill.coupling == "model"
    assert spec.distill.target == "teacher"


def test_resolve_keeps_explicit_choices_and_fills_the_rest():
    spec = resolved(spec_text("dirichlet", 'stages = [32, 16]\ncoupling = "deterministic"\nweighting = "none"',
                              "[train]\nbatch_size = 48\n"))
    assert spec.distill.coupling == "deterministic"
    assert spec.distill.target == "teacher"
    assert spec.distill.weighting == "none"
    assert spec.distill.stages == [32, 16]
    assert spec.distill.batch_size == 48            # default: train.batch_size
    assert spec.sample.steps == 16                  # sampling uses the last student
    assert spec.eval.steps == [16]


def test_resolve_to_fills_the_stages_and_the_sample_steps():
    spec = resolved(spec_text("dirichlet", "to = 4\nbatch_size = 7"))
    assert spec.distill.stages == [32, 16, 8, 4]
    assert spec.distill.batch_size == 7
    assert spec.sample.steps == 4


def test_resolve_without_distill_leaves_it_unset():
    text = '[experiment]\nname = "d"\n[process]\nfamily = "dirichlet"\nsteps = 64\n[data]\nname = "dirichlet-mixture"\n'
    spec = resolved(text)
    assert spec.distill is None
    assert spec.sample.steps == 64
