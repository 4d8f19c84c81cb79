"""The recovery study's data: what a pruned model trains on, and the local text its perplexity is read on.

Registers, in LLaMA-Factory's dataset_info.json:
- `alpaca_cleaned`: yahma/alpaca-cleaned on the hub (LLaMA-Factory downloads it when a GPU profile
  trains; LLM-Pruner's recovery data), an entry only: nothing is fetched here;
- `demo_recovery`: the project's own pool (Python's documentation, plugins.pools.demo_pool) minus a held-out
  share, for CPU profiles;
- `demo_recovery_heldout`: the held-out rows: their answers are the local perplexity text
  (tools.eval.recovery), disjoint from the training rows by id and by text.
The split is by a hash of each row's id: the same rows every time, whatever the pool's order.

Usage:
    python -m tools.data.recovery [--heldout-share 0.1] [--dataset-dir data]
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from plugins.pools import build_demo_pool
from plugins.publishing import registry
from tools.core.args import command, opt
from tools.core.paths import DATA
from tools.data.derived import publish

TRAIN, HELDOUT = "demo_recovery", "demo_recovery_heldout"
HUB = {
    "alpaca_cleaned": {
        "hf_hub_url": "yahma/alpaca-cleaned",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        registry.MARK: {"generated_by": __name__, "kind": "train", "source": "hub"},
    }
}


def _bucket(row_id: str) -> float:
    return int(hashlib.sha256(str(row_id).encode()).hexdigest()[:8], 16) / 16**8


def split(rows: list[dict], heldout_share: float) -> tuple[list[dict], list[dict]]:
    """(train, held out): by id hash; a training row whose answer equals a held-out one is dropped."""
    held = [r for r in rows if _bucket(r["id"]) < heldout_share]
    texts = {r["output"].strip() for r in held}
    train = [r for r in rows if _bucket(r["id"]) >= heldout_share and r["output"].strip() not in texts]
    return train, held


def register_recovery_data(heldout_share: float = 0.1, dataset_dir: Path = DATA) -> dict:
    train, held = split(build_demo_pool(), heldout_share)
    manifest = {"from": build_demo_pool.__module__, "heldout_share": heldout_share}
    publish(TRAIN, train, {**manifest, "heldout": HELDOUT}, dataset_dir, note="recovery training rows")
    publish(HELDOUT, held, manifest, dataset_dir, note="recovery perplexity text")
    registry.register(HUB, dataset_dir)
    return {TRAIN: len(train), HELDOUT: len(held), **dict.fromkeys(HUB, "hub")}


@dataclass
class RecoveryDataArgs:
    heldout_share: float = opt(0.1, help="share of the general rows held out", gt=0, lt=1)
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")


@command(RecoveryDataArgs, __doc__)
def main(a: RecoveryDataArgs) -> int:
    try:
        done = register_recovery_data(a.heldout_share, a.dataset_dir)
    except (registry.RegistryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        "registered " + ", ".join(f"{k} ({v} rows)" if v != "hub" else f"{k} (hub)" for k, v in done.items())
    )
    return 0


if __name__ == "__main__":
    run_main(main)
