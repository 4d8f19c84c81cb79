"""Export a recovered pruned model: the adapter merged into the pruned module, checked by logits.

LLaMA-Factory's own export writes a config.json from the module's config, which is wrong for layers of
different widths, so the merge is PEFT's (`merge_and_unload`) on the module the run trained. Writes,
under `exports/<model>/<study>/<variant>/` (built under a temporary name, renamed only after the checks):
- the merged model in the input's own format: `pruned_model.bin` (LLM-Pruner's pickled dict) or `pruned/`
  (the safe format: model.safetensors + pruned.json), reloaded from disk for the check;
- `hf/`, a plain Hugging Face folder, when every layer has the same widths (else left out, and
  export.json says why);
- `lora_adapter/` (the adapter as trained) and `export.json` (the checks: pruned module + adapter
  against each written model, max |logit difference| within `TOLERANCE["float32"]`).

Usage:
    python -m tools.export.pruned --run smollm2_135m/recovery/demo_recovery
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass

from filelib import atomic_dir, atomic_write_json, run_main
from plugins.launchers import PrunedModelError, load, save_hf, save_like, uniform_widths
from tools.core.args import command, opt
from tools.core.paths import Run
from tools.core.portable import make_portable
from tools.core.profiles import resolve_model_path
from tools.export.logits import CHECK_PROMPTS, TOLERANCE, CheckFailed, _logits, _max_diff, prompt_ids

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export_pruned(run: Run) -> dict:
    import torch
    from peft import PeftModel

    info = json.loads(run.run_json.read_text()) if run.run_json.exists() else {}
    if info.get("status") != "finished" or not run.adapter.exists():
        raise PrunedModelError(f"{run}: not a finished run (run.json status {info.get('status')!r})")
    source = resolve_model_path(str(info["model_name_or_path"]))
    trust = bool((info.get("resolved_config") or {}).get("trust_pickle"))
    model, tokenizer, kind = load(source, trust)
    model = model.float().eval()
    torch.manual_seed(0)
    ids = prompt_ids(tokenizer, CHECK_PROMPTS)
    peft_model = PeftModel.from_pretrained(model, str(run.output_dir)).eval()
    want = _logits(peft_model, ids)
    with peft_model.disable_adapter():
        plain = _logits(peft_model, ids)
    merged = peft_model.merge_and_unload()
    tol = TOLERANCE["float32"]
    record = {"run": run.name, "source": source, "format": kind, "tolerance": tol}
    record["adapter_effect"] = _max_diff(want, plain)
    with atomic_dir(run.export_dir) as tmp:
        dest = tmp / ("pruned_model.bin" if kind == "pickle" else "pruned")
        save_like(merged, tokenizer, kind, dest)
        hf = save_hf(merged, tokenizer, tmp / "hf")
        record["cannot_read"] = (
            make_portable(hf)
            if hf is not None
            else [
                "transformers (any version): cannot load this export (layers of different widths); "
                "load it with plugins.launchers.load"
            ]
        )
        (tmp / "lora_adapter").mkdir()
        for name in ADAPTER_FILES:
            shutil.copy2(run.output_dir / name, tmp / "lora_adapter" / name)
        # Reloaded from disk (the pickle is the one just written by this process, hence trusted).
        again, _, _ = load(dest, trust_pickle=True)
        checks = {dest.name: _max_diff(want, _logits(again.float().eval(), ids))}
        if hf is not None:
            from transformers import AutoModelForCausalLM

            plain_hf = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
            checks["hf"] = _max_diff(want, _logits(plain_hf, ids))
        record["max_abs_diff"] = checks
        record["hf"] = "hf/" if hf is not None else "not written: layers have different widths"
        record["uniform_widths"] = uniform_widths(merged)
        bad = {k: v for k, v in checks.items() if not v <= tol}
        if bad:
            raise CheckFailed(f"{run}: merged model differs from pruned module + adapter: {bad} > {tol}")
        record["passed"] = True
        atomic_write_json(tmp / "export.json", record)
    return record


@dataclass
class ExportPrunedArgs:
    run: str = opt(help="model/study/variant of a finished recovery run", required=True)


@command(ExportPrunedArgs, __doc__)
def main(a: ExportPrunedArgs) -> int:
    try:
        rec = export_pruned(Run.parse(a.run))
    except (PrunedModelError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckFailed as e:
        print(f"error: {e}; nothing written", file=sys.stderr)
        return 1
    print(
        f"exported {a.run} to {Run.parse(a.run).export_dir}: {json.dumps(rec['max_abs_diff'])}, hf: {rec['hf']}"
    )
    for line in rec["cannot_read"]:
        print(f"note: {line}")
    return 0


if __name__ == "__main__":
    run_main(main)
