"""What a study evaluation must compute again for a run and point, and what it can take as done: metrics
older than the answers or without the forgetting guard asked for; zero-shot results the same model already
has on another prompt set or point. (tools.eval.study's bookkeeping, apart from its loop.)"""

from __future__ import annotations

import json
from pathlib import Path

from tools.eval.source import Source


def zeroshot_done(source: Source, zeroshot: tuple[list[str], int | None]) -> dict:
    """Zero-shot results this model already has on another prompt set or point (they depend on neither),
    from metrics written after its weights were: the dev pass's results serve the test pass."""
    from tools.eval.zeroshot import expand

    tasks = expand(zeroshot[0])
    weights = [p for p in (source.adapter.glob("*.safetensors") if source.adapter else []) if p.is_file()]
    newest = max((p.stat().st_mtime for p in weights), default=0.0)
    for met in sorted(source.run.eval_root.glob("*/*/metrics.json")):
        try:
            m = json.loads(met.read_text())
        except (OSError, ValueError):
            continue
        have = m.get("zeroshot") if isinstance(m, dict) else None
        if (
            isinstance(have, dict)
            and all(t in have for t in tasks)
            and m.get("zeroshot_limit") == zeroshot[1]
            and met.stat().st_mtime >= newest
        ):
            return {t: have[t] for t in tasks}
    return {}


def metrics_stale(
    met: Path,
    pred: Path,
    heldout: tuple[str, int] | None,
    zeroshot: tuple[list[str], int | None] | None = None,
) -> bool:
    """Metrics to (re)compute: none yet, older than the answers, or without the held-out set or the
    zero-shot tasks asked for (a task recorded as skipped counts as done: it is said, not retried)."""
    if not met.exists() or met.stat().st_mtime < pred.stat().st_mtime:
        return True
    if heldout is None and not zeroshot:
        return False
    try:
        m = json.loads(met.read_text())
    except (OSError, ValueError):
        return True
    if heldout is not None and (m.get("heldout") or {}).get("dataset") != heldout[0]:
        return True
    if zeroshot:
        from tools.eval.zeroshot import expand

        have = m.get("zeroshot") or {}
        return any(t not in have for t in expand(zeroshot[0])) or m.get("zeroshot_limit") != zeroshot[1]
    return False
