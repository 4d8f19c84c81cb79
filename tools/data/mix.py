"""Mix a few percent of general instruction data into a training set (the forgetting guard).

Registers two datasets: `<name>` (the training rows plus the general ones, each marked
`general: true|false`) and `<name>_general_heldout` (general rows neither set holds), on which
`tools.eval.metrics --heldout` measures forgetting: the perplexity of general answers, base model
against each tuned run, shown in the report beside the judge score.

Usage:
    python -m tools.data.mix --dataset alpaca_top100 --general demo [--share 0.03] [--name alpaca_top100_mix]
        [--heldout-n 100] [--seed 0] [--dataset-dir data]
    --general: a pool as `python -m tools.data --source` takes it (demo, hw5, a file, a hub name)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import run_main
from plugins.pools import DataError
from plugins.publishing import RegistryError
from plugins.selection import mix_general
from tools.core.args import command, opt
from tools.core.paths import DATA
from tools.data.cli import load_source
from tools.data.derived import check_name, publish, registered_rows


def mix(
    dataset: str,
    general: str,
    share: float = 0.03,
    name: str | None = None,
    heldout_n: int = 100,
    seed: int = 0,
    dataset_dir: Path = DATA,
    keep_leaked: bool = False,
) -> dict:
    name = check_name(name or f"{dataset}_mix")
    heldout_name = check_name(f"{name}_general_heldout")
    train, train_path = registered_rows(dataset, dataset_dir)
    pool, source, _ = load_source(general)
    mixed, added, heldout = mix_general(train, pool, share, heldout_n, seed)
    base = {"from": dataset, "from_file": train_path.name, "general_source": source, "seed": seed}
    publish(
        name,
        mixed,
        {**base, "share": share, "general_rows": [r["id"] for r in added], "heldout": heldout_name},
        dataset_dir,
        note=f"{dataset} + {len(added)} general rows ({share:.0%})",
        # one unit: a kill can never pair a new mix with an old held-out set that overlaps it
        also={heldout_name: (heldout, {**base, "role": "held-out general text for forgetting"}, "")},
        also_kind="eval",
        keep_leaked=keep_leaked,
    )
    return {
        "name": name,
        "rows": len(mixed),
        "general": len(added),
        "heldout": heldout_name,
        "n_heldout": len(heldout),
    }


@dataclass
class MixArgs:
    dataset: str = opt(help="a registered training set, e.g. alpaca_top100", required=True)
    general: str = opt(help="the general pool: demo, hw5, a file or a hub name", required=True)
    share: float = opt(0.03, help="share of general rows in the mixed set", gt=0, lt=1)
    name: str | None = opt(None, help="the new dataset's name (default <dataset>_mix)")
    heldout_n: int = opt(100, help="general rows held out (the forgetting check's set)", min=1)
    seed: int = opt(0, help="the seed of the draw", nonneg=True)
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")
    keep_leaked: bool = opt(False, help="keep rows repeating a dev/test prompt (flagged)")


@command(MixArgs, __doc__)
def main(a: MixArgs) -> int:
    try:
        r = mix(a.dataset, a.general, a.share, a.name, a.heldout_n, a.seed, a.dataset_dir, a.keep_leaked)
    except (DataError, RegistryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"mix: registered {r['name']} ({r['rows']} rows, {r['general']} general) and "
        f"{r['heldout']} ({r['n_heldout']} held-out general rows); measure forgetting with "
        f"python -m tools.eval.metrics ... --heldout {r['heldout']}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
