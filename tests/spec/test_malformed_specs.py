"""Malformed specs through the real CLI (``mstar validate``): one case per mistake a user makes.

Each case is a spec (and optional ``--set`` overrides) and the exact error lines it must
produce. Every line:col was counted by hand from the spec text of the case (lines and columns
start at 1; the location of a wrong value is the location of its key, of an array element the
element). In an expected line ``…`` stands for any text (used to skip long lists of choices).

Every case also checks: exit code 2, the number of errors (all errors are reported at once),
that every error line starts with ``file:line:col`` or ``override '…'``, and no traceback.
"""
from __future__ import annotations

import re
import textwrap
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli


class Case(NamedTuple):
    id: str
    spec: str
    expect: tuple[str, ...]          # error lines without the "error: " prefix; … is a wildcard
    overrides: tuple[str, ...] = ()
    errors: int | None = None        # number of errors; default len(expect)


def case(id, spec, *expect, overrides=(), errors=None) -> Case:
    return Case(id, textwrap.dedent(spec).lstrip("\n"), expect, tuple(overrides), errors)


LOCATED = re.compile(r"error: (s\.toml:\d+:\d+|override '[^']*'): \S")

# A valid spec that most cases below start from (9 lines):
#
#   1 [experiment]
#   2 name = "t"
#   3
#   4 [process]
#   5 family = "dirichlet"
#   6 steps = 64
#   7
#   8 [data]
#   9 name = "dirichlet-mixture"

CASES = [
    # ------------------------------------------------------------------ TOML syntax errors
    case("syntax-unterminated-string", """
        [experiment]
        name = "t
        """,
        "s.toml:2:10: TOML syntax error: illegal character '\\n'; check quotes, brackets and '=' on this line "
        '(strings need quotes: key = "value")'),
    case("syntax-missing-equals", """
        [experiment]
        name = "t"
        seed 3
        """,
        "s.toml:3:6: TOML syntax error: expected '=' after a key in a key/value pair; …"),
    case("syntax-unclosed-header", """
        [experiment]
        name = "t"

        [process
        family = "dirichlet"
        """,
        "s.toml:4:9: TOML syntax error: expected ']' at the end of a table declaration; …"),
    case("syntax-unquoted-string-value", """
        [experiment]
        name = "t"

        [process]
        family = dirichlet
        """,
        "s.toml:5:10: TOML syntax error: invalid value; check quotes, brackets and '=' on this line "
        '(strings need quotes: key = "value")'),
    case("syntax-duplicate-key", """
        [experiment]
        name = "t"
        name = "u"
        """,
        "s.toml:3:11: TOML syntax error: cannot overwrite a value; …"),
    case("syntax-duplicate-table", """
        [experiment]
        name = "t"
        [experiment]
        """,
        "s.toml:3:12: TOML syntax error: cannot declare ('experiment',) twice; …"),
    case("syntax-unclosed-array-at-end", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [eval]
        metrics = ["knn-kl",
        """,
        # an error at the end of the document is placed after the last character of the last line
        "s.toml:12:21: TOML syntax error: invalid value; …"),
    case("syntax-two-values-on-a-line", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64 64
        """,
        "s.toml:6:12: TOML syntax error: expected newline or end of document after a statement; …"),

    # ------------------------------------------------------------------ typos, every nesting level
    case("typo-top-level-table", """
        [experiment]
        name = "t"

        [proces]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        # a missing table has no place in the file: it is reported at the start
        "s.toml:1:1: process: missing required table [process]; add a [process] section "
        "(model kind, family, steps, schedule, coupling, inputs and loss)",
        "s.toml:4:1: proces: unknown key 'proces' in the top level (expected tables such as [experiment]); "
        "did you mean 'process'?"),
    case("typo-top-level-table-far-from-any", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [optimizer]
        lr = 1e-4
        """,
        "s.toml:10:1: optimizer: unknown key 'optimizer' in the top level (expected tables such as [experiment]); "
        "known keys: experiment, process, data, network, train, sample, distill, eval, devices, compare"),
    case("typo-experiment-key", """
        [experiment]
        name = "t"
        sed = 1

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:3:1: experiment.sed: unknown key 'sed' in [experiment]; did you mean 'seed'?"),
    case("typo-experiment-kebab-case", """
        [experiment]
        name = "t"
          output-dir = "out"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:3:3: experiment.output-dir: unknown key 'output-dir' in [experiment]; "
        "did you mean 'output_dir'? (this key is written in snake_case)"),
    case("typo-process-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        step = 64

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.step: unknown key 'step' in [process]; did you mean 'steps'?"),
    case("typo-process-kebab-case", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        loss-weighting = "snr"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.loss-weighting: unknown key 'loss-weighting' in [process]; "
        "did you mean 'loss_weighting'? (this key is written in snake_case)"),
    case("typo-process-schedule-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.schedule]
        refrence = "cosine"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:8:1: process.schedule.refrence: unknown key 'refrence' in [process.schedule]; "
        "did you mean 'reference'?"),
    case("typo-process-schedule-dotted-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        schedule.nam = "auto"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:10: process.schedule.nam: unknown key 'nam' in [process.schedule]; did you mean 'name'?"),
    case("typo-process-coupling-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.coupling]
        knd = "ddpm"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:8:1: process.coupling.knd: unknown key 'knd' in [process.coupling]; did you mean 'kind'?"),
    case("typo-process-coupling-inline-table", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        coupling = { kind = "constant", rh = 0.5 }

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:33: process.coupling.rh: unknown key 'rh' in [process.coupling]; did you mean 'rho'?"),
    case("typo-data-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        num_example = 100
        """,
        "s.toml:9:1: data.num_example: unknown key 'num_example' in [data]; did you mean 'num_examples'?"),
    case("typo-network-kebab-case", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [network]
        class-conditional = false
        """,
        "s.toml:11:1: network.class-conditional: unknown key 'class-conditional' in [network]; "
        "did you mean 'class_conditional'? (this key is written in snake_case)"),
    case("typo-network-mlp-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [network.mlp]
        hiden = 64
        """,
        "s.toml:11:1: network.mlp.hiden: unknown key 'hiden' in [network.mlp]; did you mean 'hidden'?"),
    case("typo-network-unet-kebab-case", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar10"
        root = "data"

        [network.unet]
        channel-mult = [1, 2]
        """,
        "s.toml:12:1: network.unet.channel-mult: unknown key 'channel-mult' in [network.unet]; "
        "did you mean 'channel_mult'? (this key is written in snake_case)"),
    case("typo-train-kebab-case", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        batch-size = 64
        """,
        "s.toml:11:1: train.batch-size: unknown key 'batch-size' in [train]; "
        "did you mean 'batch_size'? (this key is written in snake_case)"),
    case("typo-train-upper-case", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        LR = 1e-4
        """,
        "s.toml:11:1: train.LR: unknown key 'LR' in [train]; did you mean 'lr'?"),
    case("typo-train-unknown-key-far-from-any", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        foo = 1
        """,
        "s.toml:11:1: train.foo: unknown key 'foo' in [train]; known keys: batch_size, steps, epochs, optimizer, "
        "lr, …, workers"),
    case("typo-sample-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [sample]
        guidence = 1.0
        """,
        "s.toml:11:1: sample.guidence: unknown key 'guidence' in [sample]; did you mean 'guidance'?"),
    case("typo-eval-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [eval]
        metric = ["knn-kl"]
        """,
        "s.toml:11:1: eval.metric: unknown key 'metric' in [eval]; did you mean 'metrics'?"),
    case("typo-distill-kebab-case", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [distill]
        to = 8
        steps-per-stage = 100
        """,
        "s.toml:13:1: distill.steps-per-stage: unknown key 'steps-per-stage' in [distill]; "
        "did you mean 'steps_per_stage'? (this key is written in snake_case)"),
    case("typo-devices-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [devices]
        proceses = 2
        """,
        "s.toml:11:1: devices.proceses: unknown key 'proceses' in [devices]; did you mean 'processes'?"),

    # ------------------------------------------------------------------ missing keys and tables
    case("missing-experiment-name", """
        [experiment]
        seed = 1

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:1:1: experiment.name: missing required key 'name': run name; the run directory is "
        'output_dir/name; add name = "..." under [experiment]'),
    case("missing-process-family", """
        [experiment]
        name = "t"

        [process]
        steps = 64

        [data]
        name = "dirichlet-mixture"
        """,
        # the family made for the data's domain (not the first family of the list)
        "s.toml:4:1: process.family: missing required key 'family': exponential family of the noise "
        '(mstar list families); add family = "dirichlet" under [process] (dataset \'dirichlet-mixture\' gives '
        "probability vectors on the simplex; gaussian also fits; mstar list families)"),
    case("missing-data-table", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        """,
        "s.toml:1:1: data: missing required table [data]; add a [data] section (dataset and preprocessing)"),
    case("empty-file", "\n",
         "s.toml:1:1: data: missing required table [data]; …",
         "s.toml:1:1: experiment: missing required table [experiment]; …",
         "s.toml:1:1: process: missing required table [process]; …"),

    # ------------------------------------------------------------------ wrong types
    case("type-quoted-integer", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = "64"

        [data]
        name = "dirichlet-mixture"
        """,
        's.toml:6:1: process.steps: expected an integer ≥ 2 and ≤ 100000, got string "64"; remove the quotes: 64'),
    case("type-float-for-integer", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64.0

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.steps: expected an integer ≥ 2 and ≤ 100000, got number 64.0; "
        "write it without a decimal point: 64"),
    case("type-quoted-boolean", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [network]
        class_conditional = "true"
        """,
        's.toml:11:1: network.class_conditional: expected true or false, got string "true"; '
        "write true without quotes"),
    case("type-integer-for-string", """
        [experiment]
        name = 5

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        's.toml:2:1: experiment.name: expected a string, got integer 5; put the value in quotes: "5"'),
    case("type-boolean-for-integer", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [devices]
        processes = true
        """,
        "s.toml:11:1: devices.processes: expected an integer ≥ 1 and ≤ 1024, got boolean true"),
    case("type-date-for-integer", """
        [experiment]
        name = "t"
        seed = 2024-01-01

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:3:1: experiment.seed: expected an integer ≥ 0 and ≤ 2147483647, got date 2024-01-01"),
    case("type-string-for-list", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [eval]
        metrics = "knn-kl"
        """,
        's.toml:11:1: eval.metrics: expected a list of strings, got string "knn-kl"; '
        'write a list, e.g. metrics = ["..."]'),
    case("type-list-element", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [eval]
        metrics = ["knn-kl", 3]
        """,
        "s.toml:11:22: eval.metrics[1]: expected a string, got integer 3; put the value in quotes: \"3\""),
    case("type-every-list-element-reported", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        betas = ["0.9", "0.999"]
        """,
        's.toml:11:10: train.betas[0]: expected a number ≥ 0 and < 1, got string "0.9"; remove the quotes: 0.9',
        's.toml:11:17: train.betas[1]: expected a number ≥ 0 and < 1, got string "0.999"; remove the quotes: 0.999'),
    case("type-value-where-table-expected", """
        process = "dirichlet"

        [experiment]
        name = "t"

        [data]
        name = "dirichlet-mixture"
        """,
        's.toml:1:1: process: expected a table, got string "dirichlet"; write it as a [process] section'),
    case("type-nested-value-where-table-expected", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        coupling = "ddpm"

        [data]
        name = "dirichlet-mixture"
        """,
        's.toml:6:1: process.coupling: expected a table, got string "ddpm"; '
        "write it as a [process.coupling] section"),
    case("type-table-where-value-expected", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.steps]
        n = 64

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:7:1: process.steps: expected an integer ≥ 2 and ≤ 100000, got a table"),
    case("type-array-of-tables-where-table-expected", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [[process.coupling]]
        kind = "ddpm"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:7:1: process.coupling: expected a table, got a list; write it as a [process.coupling] section"),

    # ------------------------------------------------------------------ bad ranges and choices
    case("range-too-small", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 1

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.steps: 1 is out of range: expected a value ≥ 2 and ≤ 100000"),
    case("range-too-large", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 200_000

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.steps: 200000 is out of range: expected a value ≥ 2 and ≤ 100000"),
    case("range-rho-above-one", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.coupling]
        kind = "constant"
        rho = 1.5

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:9:1: process.coupling.rho: 1.5 is out of range: expected a value ≥ 0 and ≤ 1"),
    case("range-exclusive-lower-bound", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        lr = 0.0
        """,
        "s.toml:11:1: train.lr: 0.0 is out of range: expected a value > 0 and ≤ 1"),
    case("range-exclusive-upper-bound", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        holdout = 1.0
        """,
        "s.toml:9:1: data.holdout: 1.0 is out of range: expected a value ≥ 0 and < 1"),
    case("range-zero-processes", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [devices]
        processes = 0
        """,
        "s.toml:11:1: devices.processes: 0 is out of range: expected a value ≥ 1 and ≤ 1024"),
    case("range-not-finite", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        lr = inf
        """,
        "s.toml:11:1: train.lr: expected a finite number, got inf"),
    case("range-list-length", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        betas = [0.9]
        """,
        "s.toml:11:1: train.betas: expected a list of exactly 2 values, got 1"),
    case("range-list-too-short", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        classes = []
        """,
        "s.toml:9:1: data.classes: expected a list of at least 1 value, got 0"),
    case("choice-near-miss", """
        [experiment]
        name = "t"

        [process]
        family = "dirichet"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:5:1: process.family: unknown value 'dirichet': expected one of 'beta', …; "
        "did you mean 'dirichlet'?"),
    case("choice-wrong-case", """
        [experiment]
        name = "t"

        [process]
        family = "Dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:5:1: process.family: unknown value 'Dirichlet': expected one of …; did you mean 'dirichlet'?"),
    case("choice-snake-case-for-kebab-case", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        loss = "kl_rescaled"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.loss: unknown value 'kl_rescaled': expected one of 'kl', 'kl-rescaled', 'x0-mse', "
        "'eps-mse'; did you mean 'kl-rescaled'?"),
    case("choice-unknown-dataset", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar-10"
        """,
        "s.toml:8:1: data.name: unknown value 'cifar-10': expected one of …'cifar10'…; did you mean 'cifar10'?"),
    case("choice-in-list-element", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [eval]
        metrics = ["knn-kl", "fdi"]
        """,
        "s.toml:11:22: eval.metrics[1]: unknown value 'fdi': expected one of 'auprc', 'energy', 'fid', 'is', "
        "'kid', 'knn-kl', 'mmd', 'precision', 'recall'; did you mean 'fid'?"),
    case("choice-fixed-list", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [devices]
        accelerator = "cuda:0"
        """,
        "s.toml:11:1: devices.accelerator: unknown value 'cuda:0': expected one of 'auto', 'cpu', 'cuda'; "
        "did you mean 'cuda'?"),
    case("pattern-run-name", """
        [experiment]
        name = "my run"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:2:1: experiment.name: 'my run' is not a valid value: expected letters, digits, '-', '_' or '.', "
        "starting with a letter or digit"),

    # ------------------------------------------------------------------ cross-field conflicts
    case("cross-beta-on-simplex-data", """
        [experiment]
        name = "t"

        [process]
        family = "beta"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:5:1: process.family: the beta family needs values strictly inside (0, 1), but dataset "
        "'dirichlet-mixture' gives probability vectors on the simplex; choose a family for probability vectors "
        "on the simplex (mstar list families)"),
    case("cross-beta-on-images-without-unit-range", """
        [experiment]
        name = "t"

        [process]
        family = "beta"

        [data]
        name = "cifar10"
        root = "data"
        """,
        "s.toml:5:1: process.family: the beta family needs values strictly inside (0, 1), but dataset 'cifar10' "
        'gives real vectors or images in R^d; set data.range = "unit" to scale images into (0, 1)'),
    case("cross-distill-to-not-a-halving", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [distill]
        to = 12
        """,
        "s.toml:12:1: distill.to: 12 does not divide process.steps = 64 by a power of two; "
        "use one of 32, 16, 8, 4, 2, 1"),
    case("cross-distill-landing-needs-rho-one-in-a-chart", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64
        inputs = "state"

        [data]
        name = "dirichlet-mixture"

        [distill]
        to = 8
        target = "landing"
        coupling = "model"
        """,
        "s.toml:14:1: distill.target: the landing target needs process.inputs = \"state\" and a family whose "
        "noise maps act coordinate by coordinate (…), or one with a chart (dirichlet, vmf, wishart) under "
        'distill.coupling = "deterministic"; use target = "teacher" or "auto"'),
    case("cross-distill-to-not-fewer-steps", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [distill]
        to = 64
        """,
        "s.toml:12:1: distill.to: distilling to 64 steps needs fewer than process.steps = 64; "
        "use one of 32, 16, 8, 4, 2, 1"),
    case("cross-distill-stages-not-halving", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [distill]
        stages = [32, 8]
        """,
        "s.toml:12:15: distill.stages[1]: stage 2 has 8 steps but must halve the previous 32; use 16"),
    case("cross-distill-to-and-stages", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [distill]
        to = 8
        stages = [32, 16, 8]
        """,
        "s.toml:11:1: distill: [distill] needs exactly one of to or stages; add to = 8 (steps 64 are halved until 8) "
        "or stages = [32, 16, ...]"),
    case("cross-batch-size-not-divisible-by-processes", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        batch_size = 130

        [devices]
        processes = 4
        """,
        "s.toml:11:1: train.batch_size: batch_size 130 does not split evenly over 4 processes; use a multiple of 4"),
    case("cross-distill-batch-size-not-divisible-by-processes", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        batch_size = 96

        [distill]
        to = 125
        batch_size = 100

        [devices]
        processes = 3
        """,
        "s.toml:15:1: distill.batch_size: batch_size 100 does not split evenly over 3 processes; use a multiple of 3"),
    case("cross-accumulation-does-not-divide-batch", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        batch_size = 128
        accumulation = 3
        """,
        "s.toml:12:1: train.accumulation: the per-process batch 128 does not split into 3 micro-batches; "
        "make batch_size / processes a multiple of accumulation"),
    case("cross-constant-coupling-without-rho", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.coupling]
        kind = "constant"

        [data]
        name = "dirichlet-mixture"
        """,
        # rho is not in the file: the error points at the table it belongs in
        "s.toml:7:1: process.coupling.rho: a constant coupling needs rho; add rho = 0.5 (a value in [0, 1])"),
    case("cross-rho-with-ddpm-coupling", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.coupling]
        kind = "ddpm"
        rho = 0.5

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:9:1: process.coupling.rho: rho is only used by the constant and learned couplings, not 'ddpm'; "
        'set process.coupling.kind = "constant" or remove rho'),
    case("cross-rho-with-default-coupling", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        coupling.rho = 0.5

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:10: process.coupling.rho: rho is only used by the constant and learned couplings, not 'independent'; …"),
    case("cross-coupling-lr-without-learned", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.coupling]
        kind = "ddpm"
        lr = 0.01

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:9:1: process.coupling.lr: lr is only used by the learned coupling; "
        'set process.coupling.kind = "learned" or remove it'),
    case("cross-eps-loss-on-non-gaussian", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        loss = "eps-mse"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.loss: eps-mse is the Gaussian noise-prediction loss; the dirichlet family predicts x0; "
        'use loss = "kl", "kl-rescaled" or "x0-mse"'),
    case("cross-sample-steps-exceed-process-steps", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [sample]
        steps = 100
        """,
        "s.toml:12:1: sample.steps: 100 network evaluations exceed process.steps = 64; use at most 64"),
    case("cross-eval-steps-exceed-process-steps", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [eval]
        steps = [64, 128]
        """,
        "s.toml:12:14: eval.steps[1]: 128 network evaluations exceed process.steps = 64"),
    case("cross-guidance-without-class-conditional", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar10"
        root = "data"

        [sample]
        guidance = 2.0
        """,
        "s.toml:12:1: sample.guidance: guidance and class_label need a class-conditional network; "
        "set network.class_conditional = true"),
    case("cross-class-label-without-class-conditional", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar10"
        root = "data"

        [sample]
        class_label = 3
        """,
        "s.toml:12:1: sample.class_label: guidance and class_label need a class-conditional network; "
        "set network.class_conditional = true"),
    case("cross-class-conditional-without-labels", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [network]
        class_conditional = true
        """,
        "s.toml:11:1: network.class_conditional: dataset 'dirichlet-mixture' has no class labels; "
        "use a labelled dataset or remove class_conditional"),
    case("cross-class-label-out-of-range", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar10"
        root = "data"

        [network]
        class_conditional = true

        [sample]
        class_label = 10
        """,
        "s.toml:15:1: sample.class_label: class 10 does not exist: classes are 0..9"),
    case("cross-fid-on-vector-data", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [eval]
        metrics = ["knn-kl", "fid"]
        """,
        "s.toml:11:22: eval.metrics[1]: fid measures images; 'dirichlet-mixture' is not an image dataset; "
        "use knn-kl, mmd or energy for low-dimensional data"),
    case("cross-vector-metric-on-images", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar10"
        root = "data"

        [eval]
        metrics = [
          "fid",
          "mmd",
        ]
        """,
        "s.toml:14:3: eval.metrics[1]: mmd is for low-dimensional data; 'cifar10' holds images; "
        "use fid or is for images"),
    case("cross-auprc-without-normal-classes", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar10"
        root = "data"

        [eval]
        metrics = ["auprc"]
        """,
        "s.toml:12:12: eval.metrics[0]: auprc needs normal classes (data.classes) or eval.anomaly_classes; "
        "set data.classes = [0] to train on class 0 and treat the others as anomalies"),
    case("cross-unet-on-vector-data", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [network]
        kind = "unet"
        """,
        "s.toml:11:1: network.kind: the U-Net needs image data; 'dirichlet-mixture' is not an image dataset; "
        'use kind = "mlp" (or auto)'),
    case("cross-preset-on-mlp", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [network]
        preset = "cifar10-ddpm"
        """,
        's.toml:11:1: network.preset: presets are U-Net configurations; set network.kind = "unet"'),
    case("cross-unet-sizes-on-mlp", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [network.unet]
        channels = 64
        """,
        "s.toml:10:1: network.unet: [network.unet] is set but the network is a mlp; "
        'remove it or set network.kind = "unet"'),
    case("cross-epochs-and-steps", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        steps = 1000
        epochs = 3
        """,
        "s.toml:12:1: train.epochs: set either train.steps or train.epochs, not both; remove one of them"),
    case("cross-fp16-on-cpu", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [train]
        precision = "fp16"

        [devices]
        accelerator = "cpu"
        """,
        's.toml:11:1: train.precision: fp16 autocast needs a GPU; use precision = "bf16" or "fp32" on the CPU'),
    case("cross-image-keys-on-vector-data", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        image_size = 32
        flip = true
        """,
        "s.toml:9:1: data.image_size: image_size applies to image datasets; 'dirichlet-mixture' is not one; "
        "remove data.image_size",
        "s.toml:10:1: data.flip: flip applies to image datasets; 'dirichlet-mixture' is not one; remove data.flip"),
    case("cross-root-on-built-in-data", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        root = "data"
        """,
        "s.toml:9:1: data.root: dataset 'dirichlet-mixture' is built in and reads no local folder; remove data.root"),
    case("cross-dim-on-fixed-shape-data", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        dim = 4
        """,
        "s.toml:9:1: data.dim: dataset 'dirichlet-mixture' has a fixed shape (3,); dim cannot be set; "
        "remove data.dim"),
    case("cross-unknown-dataset-class", """
        [experiment]
        name = "t"

        [process]
        family = "gaussian"

        [data]
        name = "cifar10"
        root = "data"
        classes = [3, 10]
        """,
        "s.toml:10:15: data.classes[1]: class 10 does not exist: 'cifar10' has classes 0..9"),
    case("cross-classes-on-unlabelled-data", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        classes = [0]
        """,
        "s.toml:9:1: data.classes: dataset 'dirichlet-mixture' has no class labels; remove data.classes"),
    case("cross-custom-schedule-without-values", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 4

        [process.schedule]
        name = "custom"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:9:1: process.schedule.name: a custom schedule needs exactly one of values or file; "
        'add values = [...] (length steps or steps + 1) or file = "schedule.npy"'),
    case("cross-custom-schedule-values-wrong-length", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 4

        [process.schedule]
        name = "custom"
        values = [0.9, 0.5, 0.1]

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:10:1: process.schedule.values: a custom schedule for steps = 4 needs 4 or 5 values, got 3"),
    case("cross-custom-schedule-not-npy", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.schedule]
        name = "custom"
        file = "schedule.txt"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:9:1: process.schedule.file: 'schedule.txt' is not a .npy file; save the array with numpy.save"),
    case("cross-values-without-custom-schedule", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 4

        [process.schedule]
        values = [0.9, 0.5, 0.1, 0.01]

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:9:1: process.schedule.values: values is only used by the custom schedule; "
        'set process.schedule.name = "custom" or remove it'),
    case("cross-schedule-for-another-family", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [process.schedule]
        name = "beta-cosine"

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:8:1: process.schedule.name: schedule 'beta-cosine' does not apply to the dirichlet family; "
        "use one of …dirichlet-exp…, or auto"),
    case("cross-reference-without-snr-matched", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        schedule = { reference = "cosine" }

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:14: process.schedule.reference: reference is only used by the snr-matched schedule; "
        'set process.schedule.name = "snr-matched" or remove it'),

    # ------------------------------------------------------------------ all errors at once
    case("three-independent-conversion-errors", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = "64"

        [data]
        name = "dirichlet-mixture"

        [train]
        batch-size = 64

        [devices]
        processes = 0
        """,
        's.toml:6:1: process.steps: expected an integer ≥ 2 and ≤ 100000, got string "64"; remove the quotes: 64',
        "s.toml:12:1: train.batch-size: unknown key 'batch-size' in [train]; "
        "did you mean 'batch_size'? (this key is written in snake_case)",
        "s.toml:15:1: devices.processes: 0 is out of range: expected a value ≥ 1 and ≤ 1024"),
    case("three-independent-cross-field-errors", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        steps = 64

        [data]
        name = "dirichlet-mixture"

        [network]
        kind = "unet"

        [train]
        steps = 1000
        epochs = 2

        [sample]
        steps = 65
        """,
        "s.toml:12:1: network.kind: the U-Net needs image data; …",
        "s.toml:16:1: train.epochs: set either train.steps or train.epochs, not both; remove one of them",
        "s.toml:19:1: sample.steps: 65 network evaluations exceed process.steps = 64; use at most 64"),

    # ------------------------------------------------------------------ command-line overrides
    case("override-unknown-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'train.lrr=1e-4': train.lrr: unknown key 'lrr' in [train]; did you mean 'lr'?",
        overrides=["train.lrr=1e-4"]),
    case("override-kebab-case-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'train.batch-size=64': train.batch-size: unknown key 'batch-size' in [train]; "
        "did you mean 'batch_size'? (this key is written in snake_case)",
        overrides=["train.batch-size=64"]),
    case("override-unknown-table", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'trian.lr=1e-4': trian: unknown key 'trian' in the top level (expected tables such as "
        "[experiment]); did you mean 'train'?",
        overrides=["trian.lr=1e-4"]),
    case("override-unparsable-value", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'train.betas=[0.9,': train.betas: cannot read the value '[0.9,'; write a TOML value: "
        'a number, true/false, [1, 2] or a quoted "string"',
        overrides=["train.betas=[0.9,"]),
    case("override-key-into-a-scalar", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'experiment.name.first=x': experiment.name: 'experiment.name' is a value, not a table, "
        "so it has no keys; set it directly: experiment.name=...",
        overrides=["experiment.name.first=x"]),
    case("override-missing-equals", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'train.lr': an override must look like section.key=value; "
        "for example train.lr=1e-4 or process.family=beta",
        overrides=["train.lr"]),
    case("override-malformed-key", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'train..lr=1': an override must look like section.key=value; …",
        overrides=["train..lr=1"]),
    case("override-wrong-type", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        # a bare word is read as a string
        "override 'process.steps=many': process.steps: expected an integer ≥ 2 and ≤ 100000, got string \"many\"",
        overrides=["process.steps=many"]),
    case("override-out-of-range-list-element", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"

        [eval]
        metrics = ["knn-kl"]
        """,
        "override 'eval.metrics=[\"knn-kl\", \"fdi\"]': eval.metrics[1]: unknown value 'fdi': expected one of …; "
        "did you mean 'fid'?",
        overrides=['eval.metrics=["knn-kl", "fdi"]']),
    case("override-causes-cross-field-error", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"

        [data]
        name = "dirichlet-mixture"
        """,
        "override 'process.coupling.kind=constant': process.coupling.rho: a constant coupling needs rho; …",
        overrides=["process.coupling.kind=constant"]),
    case("override-and-file-errors-together", """
        [experiment]
        name = "t"

        [process]
        family = "dirichlet"
        stps = 64

        [data]
        name = "dirichlet-mixture"
        """,
        "s.toml:6:1: process.stps: unknown key 'stps' in [process]; did you mean 'steps'?",
        "override 'train.lr=-1': train.lr: -1.0 is out of range: expected a value > 0 and ≤ 1",
        "override 'devices.processes': an override must look like section.key=value; …",
        overrides=["train.lr=-1", "devices.processes"]),
]


def run_validate(tmp_path, monkeypatch, text: str, overrides=()):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(text, encoding="utf-8")
    args = ["validate", "s.toml"]
    for o in overrides:
        args += ["--set", o]
    return CliRunner().invoke(cli, args)


def pattern(expected: str) -> re.Pattern:
    return re.compile("error: " + ".*".join(re.escape(part) for part in expected.split("…")))


def test_there_are_enough_cases():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_malformed_spec(c: Case, tmp_path, monkeypatch):
    result = run_validate(tmp_path, monkeypatch, c.spec, c.overrides)
    out = result.output
    assert "Traceback" not in out
    assert result.exit_code == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    for line in errors:
        assert LOCATED.match(line), f"error without a location: {line}"
    n = c.errors if c.errors is not None else len(c.expect)
    assert len(errors) == n, out
    assert f"FAIL s.toml: {n} error{'s' if n != 1 else ''}" in out
    for expected in c.expect:
        assert any(pattern(expected).fullmatch(line) for line in errors), f"missing: {expected}\n---\n{out}"


def test_file_errors_come_before_override_errors(tmp_path, monkeypatch):
    c = next(c for c in CASES if c.id == "override-and-file-errors-together")
    out = run_validate(tmp_path, monkeypatch, c.spec, c.overrides).output
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    where = [e.split(": ")[1] for e in errors]
    assert where[0] == "s.toml:6:1"
    assert sorted(where[1:]) == ["override 'devices.processes'", "override 'train.lr=-1'"]


def test_file_errors_sorted_by_position(tmp_path, monkeypatch):
    c = next(c for c in CASES if c.id == "three-independent-conversion-errors")
    out = run_validate(tmp_path, monkeypatch, c.spec).output
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors] == ["s.toml:6:1", "s.toml:12:1", "s.toml:15:1"]


# ------------------------------------------------------------------------------------ regressions
# Bugs found by these tests and fixed: each test states the correct behaviour.

BASE = textwrap.dedent("""\
    [experiment]
    name = "t"

    [process]
    family = "dirichlet"
    steps = 64

    [data]
    name = "dirichlet-mixture"
    """)


def errors_of(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


def test_conflict_with_a_default_is_located_at_the_written_key(tmp_path, monkeypatch):
    result = run_validate(tmp_path, monkeypatch, BASE + "\n[devices]\nprocesses = 3\n")   # processes: line 12
    assert result.exit_code == 2
    errors = errors_of(result)
    assert len(errors) == 1  # train.batch_size = 128 (default) does not split over 3 processes
    assert all(line.startswith("error: s.toml:12:1: train.batch_size") for line in errors), errors


def test_distill_with_odd_steps_gives_a_usable_hint(tmp_path, monkeypatch):
    result = run_validate(tmp_path, monkeypatch, BASE.replace("steps = 64", "steps = 63") + "\n[distill]\nto = 8\n")
    assert result.exit_code == 2
    (line,) = errors_of(result)
    assert line.startswith("error: s.toml:12:1: distill.to: 8 does not divide process.steps = 63 by a power of two")
    assert not line.rstrip().endswith("use one of"), line


def test_huge_integer_for_a_float_key(tmp_path, monkeypatch):
    result = run_validate(tmp_path, monkeypatch, BASE + "\n[train]\nlr = 1" + "0" * 400 + "\n")   # lr: line 12
    assert "OverflowError" not in result.output
    assert result.exit_code == 2, result.output
    (line,) = errors_of(result)
    assert line.startswith("error: s.toml:12:1: train.lr: "), line


TILDE_CASES = {
    "data.root": ('[experiment]\nname = "t"\n\n[process]\nfamily = "gaussian"\n\n[data]\nname = "cifar10"\n'
                  'root = "~nosuchuser/data"\n', "s.toml:9:1: not ready: data.root: "),
    "process.schedule.file": (BASE + '\n[process.schedule]\nname = "custom"\nfile = "~nosuchuser/s.npy"\n',
                              "s.toml:13:1: not ready: process.schedule.file: "),
    "eval.inception_weights": ('[experiment]\nname = "t"\n\n[process]\nfamily = "gaussian"\n\n[data]\n'
                               'name = "cifar10"\nroot = "data"\n\n[eval]\nmetrics = ["fid"]\n'
                               'inception_weights = "~nosuchuser/w.pth"\n',
                               "s.toml:13:1: not ready: eval.inception_weights: "),
}


@pytest.mark.parametrize("key", sorted(TILDE_CASES))
def test_path_with_unknown_user_is_reported_not_crashed(key, tmp_path, monkeypatch):
    text, expected = TILDE_CASES[key]
    result = run_validate(tmp_path, monkeypatch, text)
    assert "RuntimeError" not in result.output
    assert result.exit_code == 0, result.output          # a missing file is an environment issue
    assert expected in result.output, result.output


UNBOUNDED_LIST_ITEMS = {
    # network-evaluation counts must be ≥ 1, like sample.steps
    "eval.steps": (BASE + "\n[eval]\nsteps = [64, 0]\n", "s.toml:12:14: eval.steps[1]: "),
    # Adam betas must lie in [0, 1) (torch.optim.AdamW raises for 1.5)
    "train.betas": (BASE + "\n[train]\nbetas = [1.5, 0.999]\n", "s.toml:12:10: train.betas[0]: "),
    # anomaly classes must exist, like data.classes
    "eval.anomaly_classes": ('[experiment]\nname = "t"\n\n[process]\nfamily = "gaussian"\n\n[data]\n'
                             'name = "cifar10"\nroot = "data"\nclasses = [0]\n\n[eval]\nmetrics = ["auprc"]\n'
                             "anomaly_classes = [42]\n", "s.toml:14:20: eval.anomaly_classes[0]: "),
    # a U-Net channel multiplier of 0 gives layers without channels
    "network.unet.channel_mult": ('[experiment]\nname = "t"\n\n[process]\nfamily = "gaussian"\n\n[data]\n'
                                  'name = "cifar10"\nroot = "data"\n\n[network.unet]\nchannel_mult = [1, 0]\n',
                                  "s.toml:12:20: network.unet.channel_mult[1]: "),
}


@pytest.mark.parametrize("key", sorted(UNBOUNDED_LIST_ITEMS))
def test_list_items_out_of_range(key, tmp_path, monkeypatch):
    text, expected = UNBOUNDED_LIST_ITEMS[key]
    result = run_validate(tmp_path, monkeypatch, text)
    assert result.exit_code == 2, result.output
    assert any(line.startswith("error: " + expected) for line in errors_of(result)), result.output


def test_end_of_document_error_with_a_line_separator_in_a_comment(tmp_path, monkeypatch):
    text = '# note\u2028more\n[experiment]\nname = "t"\n[eval]\nmetrics = ["knn-kl",\n'
    result = run_validate(tmp_path, monkeypatch, text)
    assert result.exit_code == 2
    (line,) = errors_of(result)
    assert line.startswith("error: s.toml:5:21: TOML syntax error: invalid value"), line
