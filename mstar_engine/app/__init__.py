"""The application layer the CLI calls: run, compare, evaluate, sample, bench, reports, run listings."""
