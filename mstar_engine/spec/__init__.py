"""Specs: TOML with source locations, dotted overrides, strict attrs schema, checks, resolution.

    >>> loaded = load_spec("specs/quickstart.toml", ["train.lr=1e-4"])
    >>> loaded.spec.train.lr
    0.0001

Every problem of a spec is reported at once in a :class:`SpecError`.
"""
from __future__ import annotations

from pathlib import Path

import attrs

from mstar_engine.spec.checks import semantic_issues
from mstar_engine.spec.convert import Converter
from mstar_engine.spec.errors import Issue, Location, SpecError, format_path
from mstar_engine.spec.overrides import apply_overrides
from mstar_engine.spec.schema import Spec
from mstar_engine.spec.toml_source import load_toml

__all__ = ["LoadedSpec", "Issue", "Location", "Spec", "SpecError", "format_path", "load_spec", "load_spec_text"]


@attrs.frozen
class LoadedSpec:
    spec: Spec
    file: str
    text: str                          # the spec as given
    overrides: tuple[str, ...]
    locations: dict                    # key path → Location, for every key the user wrote
    warnings: tuple[Issue, ...]        # warnings and (unless ready) environment issues

    def source(self, path: tuple) -> str:
        """'default', 'file:line' or 'override' for a key path."""
        loc = self.locations.get(path)
        if loc is None:
            return "default"
        return "override" if loc.override is not None else f"{Path(loc.file).name}:{loc.line}"


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, ready: bool = False,
              semantic: bool = True) -> LoadedSpec:
    """Read, override, convert and check a spec file. ``ready=True`` also makes environment
    issues (missing datasets, weights, packages) errors, as ``mstar run`` needs;
    ``semantic=False`` skips the cross-key checks (for a run's ``spec.resolved.toml``, which
    spells out every setting, used or not)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # keep line ends as written
            text = fh.read()
    except FileNotFoundError:
        raise SpecError([Issue(Location(str(path)), (), "spec file not found",
                               "give the path of a .toml spec (see specs/ for examples)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Issue(Location(str(path)), (), f"cannot read the spec: {exc}")]) from None
    return load_spec_text(text, str(path), overrides, ready=ready, semantic=semantic)


def load_spec_text(text: str, file: str = "<spec>", overrides: list[str] | tuple[str, ...] = (), *,
                   ready: bool = False, semantic: bool = True) -> LoadedSpec:
    data, locs = load_toml(text, file)
    issues = apply_overrides(data, locs, list(overrides))
    converter = Converter(locs, file)
    spec = converter.structure(Spec, data, ())
    issues += converter.issues
    if spec is not None and not issues and semantic:  # the [compare] variants once the spec itself is sound
        issues += semantic_issues(spec, locs, file) or _variant_issues(text, file, overrides, spec, locs, ready)
    if ready:
        issues = [attrs.evolve(i, severity="error") if i.severity == "environment" else i for i in issues]
    if any(i.severity == "error" for i in issues):
        raise SpecError(issues)
    return LoadedSpec(spec, file, text, tuple(overrides), locs, tuple(issues))


def variant_overrides(loaded: LoadedSpec, name: str) -> tuple[str, ...]:
    """The overrides that turn ``loaded`` into its ``[compare]`` variant ``name`` (without its own
    comparisons)."""
    return (*loaded.overrides, *loaded.spec.compare[name], "compare={}")


def _variant_issues(text: str, file: str, overrides, spec: Spec, locs: dict, ready: bool) -> list[Issue]:
    """Every ``[compare]`` variant must itself be a valid spec; its problems are reported under
    its name, at the variant's entry in the file."""
    issues = []
    for name, extra in spec.compare.items():
        try:
            variant = load_spec_text(text, file, (*overrides, *extra, "compare={}"), ready=ready)
        except SpecError as exc:
            found = exc.issues
        else:
            found = [i for i in variant.warnings if i.severity == "environment"]
        where = locs.get(("compare", name), Location(file))
        for issue in found:
            if issue.location.override in extra:
                issue = attrs.evolve(issue, location=where)
            issues.append(attrs.evolve(issue, message=f"in [compare] {name}: {issue.message}"))
    return issues
