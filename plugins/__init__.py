"""LLaMA-Factory side of the project: turn an instruction pool into registered datasets.

Loaders, selection strategies, IFD scoring, the curriculum split and `dataset_info.json`
registration live here. Nothing in this package knows about runs, judges or reports.
"""

__version__ = "0.1.0"
