"""Thin command-line tools over importable functions: one module per job (configs, sweep,
generate, metrics, judge, export, report). Each has a `Usage:` docstring and a `main()`."""
