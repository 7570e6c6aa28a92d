"""Tables for ``mstar list``: what a spec can name, one line each."""
from __future__ import annotations


def families():
    """The built-in families and the installed plug-ins (``mstar.families`` entry points)."""
    from mstar_engine.families import available, get
    from mstar_engine.process.kernel_kl import learnable
    rows = []
    for name in sorted(available()):
        try:
            cls = get(name)
        except (KeyError, ValueError) as exc:  # a broken plug-in: say why, list the others
            rows.append((name, "?", "?", "?", "?", str(exc)))
            continue
        learned = "learned" if learnable(cls) else "ddpm rule (inverse uses auxiliary draws)"
        target = ("landing (state input)" if cls.coordinatewise else
                  "landing (state input, rho = 1)" if cls.has_chart else "teacher")
        rows.append((name, cls.domain, cls.default_schedule("independent"), learned, target, cls.summary))
    return ["family", "domain", "default schedule", "coupling 'learned'", "distillation target", "description"], rows


def datasets():
    from mstar_engine.data.catalog import DATASETS
    rows = []
    for d in DATASETS.values():
        shape = "×".join(map(str, d.shape)) + (f" ({d.dim_meaning} = data.dim)" if d.dim_meaning else "")
        needs = "data.root" if d.needs_root else (f"pip install 'mstar[{d.extra}]'" if d.extra else "built in")
        rows.append((d.name, d.kind, d.domain if not d.is_image else "images", shape, needs, d.summary))
    return ["dataset", "kind", "domain", "shape", "needs", "description"], rows


def schedules():
    from mstar_engine.schedules import SCHEDULES
    rows = [(name, ", ".join(info.families), info.summary) for name, info in sorted(SCHEDULES.items())]
    return ["schedule", "families", "description"], rows


def metrics():
    from mstar_engine.metrics.catalog import METRICS
    rows = [(m.name, m.data, m.summary) for m in METRICS.values()]
    return ["metric", "data", "description"], rows


def keys():
    from mstar_engine.spec.reference import schema_keys
    rows = [(".".join(k.path), "required" if k.required else k.default, k.accepts, k.doc) for k in schema_keys()]
    return ["key", "default", "accepts", "description"], rows


def weights():
    """The Inception weights files mstar knows where to look for: which exist, their format, sha256
    and the metrics each supports (name one in eval.inception_weights or --inception-weights)."""
    from mstar_engine.metrics.inception_weights import WeightsFormatError, describe, known_files
    rows = []
    for source, path in known_files():
        if not path.is_file():
            rows.append((source, str(path), "not found", "", ""))
            continue
        try:
            info = describe(path)
        except WeightsFormatError as exc:
            rows.append((source, str(path), f"unreadable: {exc}", "", ""))
            continue
        rows.append((source, str(path), info.format, info.sha256, ", ".join(info.metrics)))
    return ["source", "path", "format", "sha256", "metrics"], rows


TABLES = {"families": families, "datasets": datasets, "schedules": schedules, "metrics": metrics, "keys": keys,
          "weights": weights}
