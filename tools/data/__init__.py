"""The data stage's command line: load a pool, select, split the curriculum and register, through
`plugins/` (which does the work on LLaMA-Factory's side). `python -m tools.data --help`."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(__name__, {"load_source": "cli", "eval_rows": "cli", "main": "cli"})
