"""Python's cyclic garbage collector, set for processes that import torch, transformers and LLaMA-Factory.

Their imports leave about a million objects that live as long as the process. CPython 3.11 collects its
youngest generation every 700 new container objects (its default); what survives two young collections
joins the oldest generation, and once survivors pile up to a quarter of that generation the collector
walks all of it again. A command's short-lived data (rows, requests, tensors' Python wrappers) survives
700-object windows easily, so it keeps setting off those walks over the imported heap: 1.0-1.6 of a
command's 7-16 CPU-seconds (`python -m tools.train.configs check`, `python -m tools.data --all-strategies`
on HW5's rows), and 9.6 of 51 s in a slice of the test suite. A young generation of 20,000 objects lets
that data die young: 0.1-0.2 s of the commands' collections left, 3.1 s of the suite's slice. Garbage is
still collected (later, in larger batches: at most 20,000 young objects wait); the thresholds of the
older generations stay CPython's.
"""

from __future__ import annotations

import gc

YOUNG = 20_000


def tune() -> None:
    """The youngest generation's threshold raised to YOUNG (the others as they are); idempotent."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
