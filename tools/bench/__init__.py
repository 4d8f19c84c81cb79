"""Benchmarks, apart from the code they measure: one module per topic with `bench(quick) -> lines`;
`python -m tools.bench` runs them all (`make bench`), `python -m tools.bench.gpu` the GPU one."""
