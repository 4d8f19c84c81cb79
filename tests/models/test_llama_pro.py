"""LLaMA-Pro expansion: identity blocks where LLaMA-Factory looks for them, the model's outputs unchanged."""

from __future__ import annotations

import pytest

from tools.models.llama_pro import expanded_order, main


def test_new_blocks_follow_every_split_of_layers():
    assert expanded_order(4, 2) == [(0, False), (1, False), (1, True), (2, False), (3, False), (3, True)]
    # LLaMA-Factory trains indices stride-1, 2*stride-1, ... with stride = (L + N) / N
    order = expanded_order(32, 8)
    assert [i for i, (_, new) in enumerate(order) if new] == list(range(4, 40, 5))
    with pytest.raises(ValueError, match="must divide"):
        expanded_order(30, 8)


def test_expanded_model_computes_what_the_original_did(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pro"
    assert main(["--model", str(tiny_model), "--blocks", "2", "--out", str(out)]) == 0
    a = AutoModelForCausalLM.from_pretrained(tiny_model)
    b = AutoModelForCausalLM.from_pretrained(out)
    assert b.config.num_hidden_layers == a.config.num_hidden_layers + 2
    ids = torch.tensor([[1, 5, 9, 200, 3000]])
    assert torch.equal(a(ids).logits, b(ids).logits)
    assert not b.model.layers[1].mlp.down_proj.weight.any() and b.model.layers[0].mlp.down_proj.weight.any()
    assert main(["--model", str(tiny_model), "--blocks", "3", "--out", str(tmp_path / "x")]) == 2
