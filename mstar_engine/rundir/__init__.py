"""The run directory as a store: lock, --overwrite, JSON/JSONL records, the output guard.

No command of ours can corrupt it.

- :mod:`.records`: JSON and JSONL files (logs, results) read with the file and line of any problem;
  a torn last line (a kill during an append) is dropped with a warning; rewrites are atomic.
- :mod:`.files`: atomic text writes, setting a run (or a stage) aside instead of deleting it, torn
  temporary files cleaned, and the guard that keeps outputs away from a run's own files.
- :mod:`.lock`: one lock per run directory for every command that writes to it.
"""
