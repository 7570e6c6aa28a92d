"""How the ``mstar`` commands fail: one clear paragraph and an exit code, never a traceback
(unless ``mstar --debug``)."""
from __future__ import annotations

import functools
import traceback

import click

from mstar_engine.util import interrupt

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130  # 130: stopped by Ctrl-C (SIGINT)


class Failure(Exception):
    """A run that cannot go on: printed as one paragraph, exit code 1."""


class Group(click.Group):
    """The ``mstar`` group: Ctrl-C anywhere in a command (a second one in training or distillation,
    one in sampling, evaluation or any other command, in any process of a launch) exits 130 with
    one ``interrupted:`` line, not click's "Aborted!" and 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            click.echo(f"\ninterrupted: {stopped_at_once(exc, ctx.invoked_subcommand)}", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def stopped_at_once(exc: KeyboardInterrupt, command: str | None) -> str:
    """What an immediate stop by Ctrl-C left behind, for the command that it stopped."""
    if command in ("run", "distill"):
        return str(exc) if isinstance(exc, interrupt.StoppedAtOnce) else \
            "stopped at once by Ctrl-C; the last checkpoint written stays usable: run the same command again to resume"
    return f"stopped by Ctrl-C before mstar {command or ''} finished; run the same command again to start it over"


def handle_errors(command):
    """Print a clear paragraph instead of a traceback (unless --debug) and set the exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = ctx.find_root().params.get("debug", False)
        from mstar_engine.spec import SpecError
        try:
            return command(*args, **kwargs)
        except SpecError as exc:
            for issue in exc.warnings + exc.issues:
                click.echo(f"{'' if issue.warning else 'error: '}{issue}", err=True)
            n = len(exc.issues)
            click.echo(f"{n} error{'s' if n != 1 else ''} in the spec", err=True)
            ctx.exit(EXIT_USAGE)
        except Failure as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_FAILED)
        except interrupt.Interrupted as exc:
            click.echo(f"interrupted: {exc}", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence of a CLI
            if debug:
                traceback.print_exc()
            else:
                click.echo(f"error: {type(exc).__name__}: {exc}\n(run with mstar --debug ... for the traceback)",
                           err=True)
            ctx.exit(EXIT_FAILED)

    return wrapper


def run_errors() -> tuple[type[BaseException], ...]:
    """The engine's errors that stop a run with a message of their own (printed, exit 1)."""
    from mstar_engine.data.offline import DataError
    from mstar_engine.distributed.launch import ProcessStopped
    from mstar_engine.families import DomainError
    from mstar_engine.metrics.image_statistics import ReferenceStatisticsError
    from mstar_engine.metrics.inception import InceptionWeightsMissing
    from mstar_engine.rundir.claim import RunExists
    from mstar_engine.rundir.files import OutputError
    from mstar_engine.rundir.lock import RunLocked
    from mstar_engine.rundir.records import RecordError
    from mstar_engine.app.runs import NonFiniteSamples
    from mstar_engine.train.checkpoint import CheckpointError
    from mstar_engine.train.stage import CheckpointMismatch, TrainingDiverged
    return (DataError, DomainError, CheckpointError, CheckpointMismatch, TrainingDiverged, NotImplementedError,
            ImportError, InceptionWeightsMissing, ReferenceStatisticsError, ProcessStopped, RunLocked, RunExists,
            RecordError, OutputError, NonFiniteSamples)
