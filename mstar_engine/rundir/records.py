"""JSON and JSONL records of a run directory (``metrics.jsonl``, ``distill.jsonl``,
``eval.jsonl``, ``results.json``).

Logs are appended a line at a time, so a kill or a full disk during an append can leave a torn
last line. Readers drop such a line (with a warning through ``warn``) instead of failing; a bad
line anywhere else is a :class:`RecordError` naming the file and line. Every rewrite (dropping the
lines written after a resumed checkpoint, results) is atomic.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from mstar_engine.rundir.files import write_text


class RecordError(ValueError):
    """A JSON or JSONL file of a run that cannot be read; the message names the file and line."""


def read_jsonl(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The records of a JSONL file, one dict per non-empty line ([] when the file does not exist).
    A last line that does not parse (torn by a kill or a full disk) is dropped, with a warning
    through ``warn``; any other unreadable line raises :class:`RecordError`."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = text.split("\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    out = []
    for k, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            last = k == len(numbered) - 1
            if last:  # torn by an interrupted append
                if warn is not None:
                    warn(f"warning: {path}:{number}: dropped a torn last line ({_short(line)}); it was being "
                         "written when the run stopped")
                break
            raise RecordError(f"{path}:{number}: not a JSON record ({_reason(exc)}): {_short(line)}. The file was "
                              "edited or damaged; delete that line (or the file) to go on") from None
        out.append(record)
    return out


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Replace ``path`` atomically with ``records``, one JSON object per line."""
    write_text(Path(path), "".join(json.dumps(r) + "\n" for r in records))


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append ``records`` to ``path``, flushed. A line left torn by an earlier crash (the file does
    not end with a newline) is cut off first, so the log never holds a bad line before good ones."""
    path = Path(path)
    text = "".join(json.dumps(r) + "\n" for r in records)
    with path.open("ab") as fh:
        end = fh.tell()
        if end:
            cut = _torn_tail(path, end)
            if cut < end:
                fh.truncate(cut)
        fh.write(text.encode())
        fh.flush()


def _torn_tail(path: Path, end: int, chunk: int = 1 << 16) -> int:
    """The length of ``path`` without a last line that lacks its newline."""
    with path.open("rb") as fh:
        position = end
        while position > 0:
            start = max(0, position - chunk)
            fh.seek(start)
            block = fh.read(position - start)
            if position == end and block.endswith(b"\n"):
                return end
            newline = block.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
    return 0


def keep_records(path: str | Path, keep: Callable[[dict], bool], warn: Callable[[str], None] | None = None) -> None:
    """Rewrite a JSONL log atomically with the records ``keep`` accepts (the lines written after a
    resumed checkpoint are dropped this way); a torn last line is dropped too."""
    path = Path(path)
    if path.is_file():
        write_jsonl(path, [r for r in read_jsonl(path, warn) if keep(r)])


def read_json(path: str | Path) -> object:
    """The JSON document in ``path``; :class:`RecordError` naming the file and line when it cannot be
    read."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecordError(f"{path} is not a text file (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None


def write_json(path: str | Path, document: object) -> None:
    """Write ``document`` to ``path`` atomically (indented, one trailing newline)."""
    write_text(Path(path), json.dumps(document, indent=2) + "\n")


def _reason(exc: ValueError) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _short(line: str, limit: int = 60) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "…")
