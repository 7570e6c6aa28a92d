"""Spec problems: where they are, what is wrong, how to fix it."""
from __future__ import annotations

import difflib

import attrs

Path = tuple  # tuple[str | int, ...]: table keys and array indices


def format_path(path: Path) -> str:
    """``("distill", "stages", 0)`` → ``distill.stages[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "<spec>"


@attrs.frozen
class Location:
    """Where a value came from: a file position or a command-line override."""

    file: str
    line: int = 1
    col: int = 1
    override: str | None = None  # the ``key=value`` text when the value came from the command line

    def __str__(self) -> str:
        if self.override is not None:
            return f"override '{self.override}'"
        return f"{self.file}:{self.line}:{self.col}"


def locate(locs: dict[Path, Location], path: Path, file: str) -> Location:
    """The location of ``path`` or of its nearest located parent (else the start of ``file``)."""
    for n in range(len(path), 0, -1):
        if path[:n] in locs:
            return locs[path[:n]]
    return Location(file, 1, 1)


@attrs.frozen
class Issue:
    """One problem found in a spec.

    ``severity`` is "error" (the spec is wrong), "warning" (legal but known to work badly) or
    "environment" (the spec is fine but this machine cannot run it yet: a missing dataset,
    weights file or package). ``mstar validate`` reports environment issues as warnings unless
    ``--ready``; ``mstar run`` treats them as errors.
    """

    location: Location
    path: Path
    message: str
    hint: str = ""
    severity: str = "error"

    @property
    def warning(self) -> bool:
        return self.severity != "error"

    def __str__(self) -> str:
        kind = {"error": "", "warning": "warning: ", "environment": "not ready: "}[self.severity]
        where = f"{format_path(self.path)}: " if self.path else ""
        text = f"{self.location}: {kind}{where}{self.message}"
        return f"{text}; {self.hint}" if self.hint else text


class SpecError(Exception):
    """Every error of a spec at once. ``str()`` prints one located line per issue."""

    def __init__(self, issues: list[Issue]):
        issues = sorted(issues, key=lambda i: (i.location.override is not None, i.location.file,
                                               i.location.line, i.location.col))
        self.issues = [i for i in issues if not i.warning]
        self.warnings = [i for i in issues if i.warning]
        super().__init__("\n".join(str(i) for i in self.issues))


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """A hint for a near miss, aware of snake_case vs kebab-case; empty when nothing is close."""
    choices = sorted(choices)
    for form in (word.replace("-", "_"), word.replace("_", "-"), word.lower()):
        if form != word and form in choices:
            style = "snake_case" if "_" in form else "kebab-case"
            return f"did you mean '{form}'? (this key is written in {style})" if style == "snake_case" \
                else f"did you mean '{form}'?"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(word.replace("-", "_").lower(),
                                          [c.replace("-", "_").lower() for c in choices], n=1, cutoff=0.6)
        close = [c for c in choices if c.replace("-", "_").lower() in close][:1]
    return f"did you mean '{close[0]}'?" if close else ""
