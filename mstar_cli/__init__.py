"""Click commands only: parse the command line, call the engine, print tables (no maths here)."""
