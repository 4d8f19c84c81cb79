"""Structured magnitude pruning of a LLaMA-family model, different amounts per layer, LLM-Pruner's output.

What it removes, per decoder layer: MLP channels (a row of gate/up, the matching column of down) and
whole key/value groups of attention (one key/value head and the query heads that share it, so the
grouped-query ratio stays whole). Which ones: the smallest by L1 magnitude of the weights they own.
How many: the share ramps linearly with depth from 0.5x to 1.5x the asked ratio (later layers lose
more), so layers end up with different widths, as LLM-Pruner's models do; the first `skip_first` and
last `skip_last` layers are left whole (LLM-Pruner's default keeps the first and last few too). At least
one group and an eighth of the channels stay in every layer. The model is modified in place.

Writes `{"model": module, "tokenizer": tokenizer}` with torch.save (LLM-Pruner's `pruned_model.bin`) or,
with --safe, the safe folder (plugins.pruned), and `<out>.prune.json` beside it (what was removed).

Usage:
    python -m tools.models.prune --model models/smollm2-135m-instruct --out saves/smollm2_135m/pruned/pruned_model.bin
        [--mlp-ratio 0.3] [--head-ratio 0.2] [--skip-first 2] [--skip-last 2] [--safe]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugins.fileio import atomic_write_json
from plugins.pruned import layer_widths, param_count, resize_layer, save_pickle, save_safe


def layer_ratio(ratio: float, i: int, first: int, last: int) -> float:
    """The share of layer i to remove: 0 outside [first, last], ramping 0.5x -> 1.5x the ratio inside."""
    if i < first or i > last:
        return 0.0
    pos = (i - first) / (last - first) if last > first else 0.5
    return ratio * (0.5 + pos)


def _keep(scores, n_keep: int):
    import torch

    return torch.sort(torch.topk(scores, n_keep).indices).values


def prune_layer(layer, drop_groups: int, drop_channels: int) -> dict:
    """Remove the smallest `drop_groups` key/value groups and `drop_channels` MLP channels of one layer."""
    import torch

    attn, mlp = layer.self_attn, layer.mlp
    hd = attn.head_dim
    heads, kv = attn.q_proj.out_features // hd, attn.k_proj.out_features // hd
    per = heads // kv
    with torch.no_grad():
        q = attn.q_proj.weight.abs().view(kv, per * hd, -1).sum((1, 2))
        k = attn.k_proj.weight.abs().view(kv, hd, -1).sum((1, 2))
        v = attn.v_proj.weight.abs().view(kv, hd, -1).sum((1, 2))
        o = attn.o_proj.weight.abs().view(-1, kv, per * hd).sum((0, 2))
        groups = _keep(q + k + v + o, kv - drop_groups)
        q_rows = torch.cat([torch.arange(g * per * hd, (g + 1) * per * hd) for g in groups.tolist()])
        kv_rows = torch.cat([torch.arange(g * hd, (g + 1) * hd) for g in groups.tolist()])
        score = (
            mlp.gate_proj.weight.abs().sum(1)
            + mlp.up_proj.weight.abs().sum(1)
            + mlp.down_proj.weight.abs().sum(0)
        )
        chans = _keep(score, mlp.gate_proj.out_features - drop_channels)
        old = {n: getattr(attn, n).weight.data for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        old.update({n: getattr(mlp, n).weight.data for n in ("gate_proj", "up_proj", "down_proj")})
        resize_layer(layer, len(q_rows) // hd, len(kv_rows) // hd, len(chans))
        attn.q_proj.weight.copy_(old["q_proj"][q_rows])
        attn.k_proj.weight.copy_(old["k_proj"][kv_rows])
        attn.v_proj.weight.copy_(old["v_proj"][kv_rows])
        attn.o_proj.weight.copy_(old["o_proj"][:, q_rows])
        mlp.gate_proj.weight.copy_(old["gate_proj"][chans])
        mlp.up_proj.weight.copy_(old["up_proj"][chans])
        mlp.down_proj.weight.copy_(old["down_proj"][:, chans])
    return {"groups_removed": drop_groups, "channels_removed": drop_channels}


def prune(
    model, mlp_ratio: float = 0.3, head_ratio: float = 0.2, skip_first: int = 2, skip_last: int = 2
) -> dict:
    """Prune in place; returns what was removed and the parameter counts before and after."""
    layers = model.model.layers
    if any(getattr(m, "bias", None) is not None for m in layers.modules() if hasattr(m, "out_features")):
        raise ValueError("projections with biases are not handled by this pruner")
    n = len(layers)
    first, last = min(skip_first, n - 1), max(n - 1 - skip_last, min(skip_first, n - 1))
    before = param_count(model)
    removed = []
    for i, layer in enumerate(layers):
        w = layer_widths(model)[i]
        kv, inter = w["num_key_value_heads"], w["intermediate_size"]
        hr, mr = layer_ratio(head_ratio, i, first, last), layer_ratio(mlp_ratio, i, first, last)
        groups = min(int(hr * kv + 0.5), kv - 1)
        chans = min(int(mr * inter + 0.5), inter - max(1, inter // 8))
        removed.append({"layer": i, **prune_layer(layer, groups, chans)})
    after = param_count(model)
    return {
        "mlp_ratio": mlp_ratio,
        "head_ratio": head_ratio,
        "skip_first": skip_first,
        "skip_last": skip_last,
        "params_before": before,
        "params_after": after,
        "pruned_share": round(1 - after / before, 4),
        "layers": [{**r, **w} for r, w in zip(removed, layer_widths(model), strict=True)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="an HF folder of a LLaMA-family model")
    ap.add_argument("--out", type=Path, required=True, help="pruned_model.bin (pickle) or a folder (--safe)")
    ap.add_argument("--mlp-ratio", type=float, default=0.3)
    ap.add_argument("--head-ratio", type=float, default=0.2)
    ap.add_argument("--skip-first", type=int, default=2)
    ap.add_argument("--skip-last", type=int, default=2)
    ap.add_argument(
        "--safe", action="store_true", help="write the safe format (a folder) instead of a pickle"
    )
    a = ap.parse_args(argv)
    for name in ("mlp_ratio", "head_ratio"):
        if not 0 <= getattr(a, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be in [0, 1)", file=sys.stderr)
            return 2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(a.model)
    except OSError as e:
        print(f"error: --model {a.model}: {e}", file=sys.stderr)
        return 2
    info = prune(model, a.mlp_ratio, a.head_ratio, a.skip_first, a.skip_last)
    info["source"] = str(a.model)
    (save_safe if a.safe else save_pickle)(model, tokenizer, a.out)
    atomic_write_json(a.out.with_name(a.out.name + ".prune.json"), info)
    print(
        f"pruned {a.model}: {info['params_before']:,} -> {info['params_after']:,} parameters "
        f"({100 * info['pruned_share']:.1f}% removed), written to {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
