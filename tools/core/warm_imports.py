"""The last of the warm fork server's preload (tools.core.warm): what every job would pay again on its own.

LLaMA-Factory's model loader asks whether the model's config is one of the image-text, seq2seq or
text-to-waveform classes (`_model_mapping.keys()` of three auto classes), and transformers imports every
model family's configuration module to answer: ~210 modules, 1.6-1.8 s of a CPU, in every training,
export or generation job. Asked once here, the children find them imported (the answer is the same).

The LLaMA model code, TensorBoard's writer (report_to) and matplotlib's Agg canvas (plot_loss) are the
rest of what a tiny training job imported on its own (146 modules, ~0.2 s).

Then the server's objects are moved out of the collector's reach (`gc.freeze`): a child's collections
(accelerate runs one at every run's end, 0.4 s over the inherited heap) skip them, and do not write to the
pages the child shares with the server, so those stay shared and out of the child's own memory.
"""

from __future__ import annotations

import gc


def _model_families() -> None:
    from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform

    for auto in (AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForTextToWaveform):
        auto._model_mapping.keys()


_model_families()
import matplotlib.backends.backend_agg  # noqa: E402,F401
import torch.utils.tensorboard  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401

gc.collect()
gc.freeze()
