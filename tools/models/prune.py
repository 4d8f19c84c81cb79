"""Structured magnitude pruning of a LLaMA-family model, different amounts per layer, LLM-Pruner's output.

What it removes, per decoder layer: MLP channels (a row of gate/up, the matching column of down) and
whole key/value groups of attention (one key/value head and the query heads that share it, so the
grouped-query ratio stays whole). Which ones: the smallest by L1 magnitude of the weights they own, or,
with calibration text (`--calibration DATASET`), by Wanda's activation-weighted magnitude: each input
channel of down_proj / o_proj scores ||its activations||_2 x ||its weight column||_1 on that text, a
group the sum of its heads' channels (far gentler on a small model: see the README's recovery section).
How many: the share ramps linearly with depth from 0.5x to 1.5x the asked ratio (later layers lose
more), so layers end up with different widths, as LLM-Pruner's models do; the first `skip_first` and
last `skip_last` layers are left whole (LLM-Pruner's default keeps the first and last few too). At least
one group and an eighth of the channels stay in every layer. The model is modified in place.

Writes `{"model": module, "tokenizer": tokenizer}` with torch.save (LLM-Pruner's `pruned_model.bin`) or,
with --safe, the safe folder (plugins.launchers.pruned), and `<out>.prune.json` beside it (what was removed).

Usage:
    python -m tools.models.prune --model models/smollm2-135m-instruct --out saves/smollm2_135m/pruned/pruned_model.bin
        [--mlp-ratio 0.3] [--head-ratio 0.2] [--skip-first 2] [--skip-last 2] [--safe]
        [--calibration demo_recovery [--dataset-dir data]]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from filelib import atomic_write_json, check_output, run_main
from plugins.launchers import layer_widths, param_count, resize_layer, save_pickle, save_safe
from plugins.publishing import RegistryError, resolve
from tools.core.paths import DATA

OWNER = "tools.models.prune (a pruned model)"


def layer_ratio(ratio: float, i: int, first: int, last: int) -> float:
    """The share of layer i to remove: 0 outside [first, last], ramping 0.5x -> 1.5x the ratio inside."""
    if i < first or i > last:
        return 0.0
    pos = (i - first) / (last - first) if last > first else 0.5
    return ratio * (0.5 + pos)


def _keep(scores, n_keep: int):
    import torch

    return torch.sort(torch.topk(scores, n_keep).indices).values


def activation_norms(model, tokenizer, texts: list[str], max_tokens: int = 2048, seq_len: int = 256) -> list:
    """Per layer: (||input||_2 of each o_proj channel, of each down_proj channel) over the calibration text."""
    import torch

    sums: list[list] = [[None, None] for _ in model.model.layers]
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for j, mod in enumerate((layer.self_attn.o_proj, layer.mlp.down_proj)):

            def hook(_m, args, _out, i=i, j=j):
                sq = args[0].detach().float().pow(2).sum(tuple(range(args[0].dim() - 1)))
                sums[i][j] = sq if sums[i][j] is None else sums[i][j] + sq

            hooks.append(mod.register_forward_hook(hook))
    ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids[0][:max_tokens]
    try:
        with torch.no_grad():
            for start in range(0, len(ids), seq_len):
                model(input_ids=ids[start : start + seq_len][None])
    finally:
        for h in hooks:
            h.remove()
    return [(o.sqrt(), d.sqrt()) for o, d in sums]


def prune_layer(layer, drop_groups: int, drop_channels: int, norms: tuple | None = None) -> dict:
    """Remove the least important `drop_groups` key/value groups and `drop_channels` MLP channels of one layer
    (L1 magnitude; with `norms` from activation_norms, activation-weighted magnitude)."""
    import torch

    attn, mlp = layer.self_attn, layer.mlp
    hd = attn.head_dim
    heads, kv = attn.q_proj.out_features // hd, attn.k_proj.out_features // hd
    per = heads // kv
    with torch.no_grad():
        if norms is not None:
            gscore = (attn.o_proj.weight.abs().sum(0) * norms[0]).view(kv, per * hd).sum(1)
        else:
            q = attn.q_proj.weight.abs().view(kv, per * hd, -1).sum((1, 2))
            k = attn.k_proj.weight.abs().view(kv, hd, -1).sum((1, 2))
            v = attn.v_proj.weight.abs().view(kv, hd, -1).sum((1, 2))
            gscore = q + k + v + attn.o_proj.weight.abs().view(-1, kv, per * hd).sum((0, 2))
        groups = _keep(gscore, kv - drop_groups)
        q_rows = torch.cat([torch.arange(g * per * hd, (g + 1) * per * hd) for g in groups.tolist()])
        kv_rows = torch.cat([torch.arange(g * hd, (g + 1) * hd) for g in groups.tolist()])
        if norms is not None:
            score = mlp.down_proj.weight.abs().sum(0) * norms[1]
        else:
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
    model,
    mlp_ratio: float = 0.3,
    head_ratio: float = 0.2,
    skip_first: int = 2,
    skip_last: int = 2,
    norms: list | None = None,
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
        removed.append({"layer": i, **prune_layer(layer, groups, chans, norms[i] if norms else None)})
    after = param_count(model)
    return {
        "mlp_ratio": mlp_ratio,
        "head_ratio": head_ratio,
        "skip_first": skip_first,
        "skip_last": skip_last,
        "importance": "activation-weighted magnitude" if norms else "L1 magnitude",
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
    ap.add_argument("--calibration", help="a registered dataset whose text weighs the magnitudes (Wanda)")
    ap.add_argument("--dataset-dir", type=Path, default=DATA)
    a = ap.parse_args(argv)
    for name in ("mlp_ratio", "head_ratio"):
        if not 0 <= getattr(a, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be in [0, 1)", file=sys.stderr)
            return 2
    # never over the input model, inside another model's folder, or over another command's folder
    check_output(a.out, OWNER, inputs=[a.model], folder=a.safe, own_files=["pruned.json"])
    check_output(a.out.with_name(a.out.name + ".prune.json"), OWNER, inputs=[a.model], folder=False)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(a.model)
    except OSError as e:
        print(f"error: --model {a.model}: {e}", file=sys.stderr)
        return 2
    norms = None
    if a.calibration:
        try:
            rows = json.loads(resolve(a.calibration, a.dataset_dir).read_text())
        except RegistryError as e:
            print(f"error: --calibration: {e}", file=sys.stderr)
            return 2
        norms = activation_norms(model, tokenizer, [f"{r['instruction']}\n{r['output']}" for r in rows])
    info = prune(model, a.mlp_ratio, a.head_ratio, a.skip_first, a.skip_last, norms)
    info.update(source=str(a.model), calibration=a.calibration)
    (save_safe if a.safe else save_pickle)(model, tokenizer, a.out)
    atomic_write_json(a.out.with_name(a.out.name + ".prune.json"), info)
    print(
        f"pruned {a.model}: {info['params_before']:,} -> {info['params_after']:,} parameters "
        f"({100 * info['pruned_share']:.1f}% removed), written to {a.out}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
