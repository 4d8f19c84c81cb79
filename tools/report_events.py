"""A run's training curves from its TensorBoard event files, read with TensorBoard's own reader.

transformers 5 writes `train/loss`, `train/learning_rate`, `train/grad_norm` and, when evaluating,
`eval/loss` into `<output_dir>/runs/<timestamp>_<host>/events.out.tfevents.*`. We read the records
with `RawEventFileLoader` (TensorBoard's record framing and CRC checks), parse each with TensorBoard's
`Event` proto and keep only the tags the report needs: that is what makes 50 runs of 1,000 steps
cheap (EventAccumulator keeps every tag and migrates every value, about 40 % slower here).

A retrained or resumed run leaves several event files; the later file wins from its first step on,
the way TensorBoard purges orphaned steps after a restart. A file that ends in a partial record (a
killed writer, a run still going) is read up to the last whole record and reported.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# short name -> tag transformers 5 writes (checked against a real `llamafactory-cli train`)
TAGS = {
    "loss": "train/loss",
    "eval_loss": "eval/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
}


@dataclass
class Curves:
    """Scalar series by short name, each (steps, values) sorted by step, and what went wrong reading."""

    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    files: int = 0
    problems: list[str] = field(default_factory=list)

    def steps(self, name: str) -> list[int]:
        return self.series.get(name, ([], []))[0]

    def values(self, name: str) -> list[float]:
        return self.series.get(name, ([], []))[1]


def event_files(tb_dir: Path) -> list[Path]:
    """Event files under a run's `runs/` folder, oldest first (the name starts with a timestamp)."""
    if not tb_dir.is_dir():
        return []
    files = [p for p in tb_dir.rglob("events.out.tfevents.*") if p.is_file()]
    return sorted(files, key=lambda p: (_file_time(p), str(p)))


def _file_time(p: Path) -> float:
    try:
        return float(p.name.split(".")[3])
    except (IndexError, ValueError):
        return p.stat().st_mtime


def _scalar(value) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":  # tf2-style writers store scalars as 0-d tensors
        from tensorboard.util import tensor_util

        arr = tensor_util.make_ndarray(value.tensor)
        return float(arr.reshape(-1)[0]) if arr.size == 1 else None
    return None


def read_file(path: Path, wanted: dict[str, str] = TAGS) -> tuple[dict[str, dict[int, float]], str | None]:
    """One event file: {short name: {step: value}} for the wanted tags, and a problem or None."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    by_tag = {tag: name for name, tag in wanted.items()}
    out: dict[str, dict[int, float]] = {}
    consumed = 0
    try:
        for raw in RawEventFileLoader(str(path)).Load():
            consumed += len(raw) + 16  # length, its CRC, the record, its CRC
            event = event_pb2.Event.FromString(raw)
            for v in event.summary.value:
                name = by_tag.get(v.tag)
                if name is not None:
                    x = _scalar(v)
                    if x is not None:
                        out.setdefault(name, {})[int(event.step)] = x
    except Exception as e:  # a corrupt record: keep what was read before it
        return out, f"{path.name}: unreadable after {consumed} bytes ({type(e).__name__}: {e})"
    size = path.stat().st_size
    if consumed < size:
        return out, (
            f"{path.name}: ends in {size - consumed} bytes of a partial or corrupt record "
            "(truncated, or still being written): read up to the last whole record"
        )
    return out, None


def read_events(tb_dir: str | Path, wanted: dict[str, str] = TAGS) -> Curves:
    """The run's curves from every event file under `tb_dir`; later files win from their first step."""
    tb_dir = Path(tb_dir)
    curves = Curves()
    files = event_files(tb_dir)
    curves.files = len(files)
    if not tb_dir.is_dir():
        curves.problems.append(f"no TensorBoard folder {tb_dir}")
        return curves
    if not files:
        curves.problems.append(f"no event files under {tb_dir}")
        return curves
    merged: dict[str, dict[int, float]] = {}
    for path in files:
        data, problem = read_file(path, wanted)
        if problem:
            curves.problems.append(problem)
        for name, points in data.items():
            old = merged.setdefault(name, {})
            if points:
                first = min(points)
                for step in [s for s in old if s >= first]:
                    del old[step]
            old.update(points)
    for name, points in merged.items():
        steps = sorted(points)
        curves.series[name] = (steps, [points[s] for s in steps])
    if "loss" not in curves.series:
        curves.problems.append(f"no {wanted.get('loss', 'train/loss')} scalars in {tb_dir}")
    return curves


def read_many(tb_dirs: list[Path], workers: int | None = None) -> list[Curves]:
    """Curves of many runs; a process per core when there are enough runs to pay for the start-up."""
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(tb_dirs) >= 8 else 1
    if workers <= 1:
        return [read_events(d) for d in tb_dirs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read_events, tb_dirs, chunksize=max(1, math.ceil(len(tb_dirs) / workers / 4))))
