"""The fork server's preload (tools.core.warm): what every job would pay again on its own, imported once.

First the modules of `llamafactory-cli train`'s start (tools.core.warm.MODULES). Then what LLaMA-Factory's
model loader imports on its first load: it asks whether the model's config is one of the image-text,
seq2seq or text-to-waveform classes (`_model_mapping.keys()` of three auto classes), and transformers
imports every model family's configuration module to answer: ~210 modules, 1.6-1.8 s of a CPU, in every
training, export or generation job. Asked once here, the children find them imported (the answer is the
same). The LLaMA model code, TensorBoard's writer (report_to) and matplotlib's Agg canvas (plot_loss) are
the rest of what a tiny training job imported on its own (146 modules, ~0.2 s).

Python's cyclic collector is off while these import: the import graph only grows (over a million objects),
and each full collection the growth sets off walks all of it again, ~2 of the ~10 CPU-seconds the same
imports take with it on (measured: `import llamafactory.train.tuner`, 9.1-9.4 s user against 7.1-7.4 s).
Then one collection, and the server's objects are moved out of the collector's reach (`gc.freeze`): a
child's collections (accelerate runs one at every run's end, 0.4 s over the inherited heap) skip them,
and do not write to the pages the child shares with the server, so those stay shared and out of the
child's own memory. The collector is on again in the server and in every child (tools.core.warm._job),
set as every command sets it (filelib.collector).
"""

from __future__ import annotations

import gc
import importlib

from filelib import tune_collector

gc.disable()
try:
    from tools.core.warm import MODULES

    for _name in MODULES:
        try:
            importlib.import_module(_name)
        except ImportError:
            pass  # as multiprocessing's own preload skips a module it cannot import

    from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform

    for _auto in (AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform):
        _auto._model_mapping.keys()
    import matplotlib.backends.backend_agg  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
finally:
    gc.collect()
    gc.freeze()
    gc.enable()
    tune_collector()  # the children's too (filelib.collector)
