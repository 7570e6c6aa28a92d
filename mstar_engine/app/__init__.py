"""The application layer: what the commands do (run, compare, evaluate, sample, bench, report, runs) over the engine."""
