"""The fork server's preload (tools.core.warm): what every job would pay again on its own, imported once.

First the modules of `llamafactory-cli train`'s start (tools.core.warm.MODULES). Then what LLaMA-Factory's
model loader imports on its first load: it asks whether the model's config is one of the image-text,
seq2seq or text-to-waveform classes (`_model_mapping.keys()` of three auto classes), and transformers
imports every model family's configuration module to answer: ~210 modules, 1.6-1.8 s of a CPU, in every
training, export or generation job. Asked once here, the children find them imported (the answer is the
same). The LLaMA model code, TensorBoard's writer (report_to) and matplotlib's Agg canvas (plot_loss) are
the rest of what a tiny training job imported on its own (146 modules, ~0.2 s).

The collector is set as every command sets it (filelib.collector) before these imports, and the children
inherit it: the import graph only grows (over a million objects), and CPython's default young generation
has the collector walk all of it again and again as it grows (`import llamafactory.train.tuner`: 9.1-9.4 s
user with the default, 7.1-7.4 s with the collector off). With the collector off altogether while the
server imported, it started in 6.6-6.8 CPU-seconds, but its heap was laid out otherwise, and a warm child's
measured memory then differed from a fresh process's by 5.4% for the same run (the tiny model's full
fine-tune), past the 5% tests/train/test_bills.py allows; set as every command sets it, the server starts
in 7.3-7.9 CPU-seconds (8.0-8.7 before) and a warm child measures within 1% of a fresh one.
Then one collection, and the server's objects moved out of the collector's reach (`gc.freeze`): a
child's collections (accelerate runs one at every run's end, 0.4 s over the inherited heap) skip them,
and do not write to the pages the child shares with the server, so those stay shared and out of the
child's own memory.
"""

from __future__ import annotations

import gc
import importlib

from filelib import tune_collector

tune_collector()
from tools.core.warm import MODULES  # noqa: E402

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except ImportError:
        pass  # as multiprocessing's own preload skips a module it cannot import

from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform  # noqa: E402

for _auto in (AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform):
    _auto._model_mapping.keys()
import matplotlib.backends.backend_agg  # noqa: E402,F401
import torch.utils.tensorboard  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401

gc.collect()
gc.freeze()
