"""TensorBoard's HParams view of a study: `tensorboard --logdir reports/<study>/tb` compares the runs.

The folder holds the experiment (which hyperparameters and metrics exist) at its top and one
sub-folder per run (`<model>/<variant>`, the base model as `<model>/_base`) with the run's
hyperparameter values, its end status and the metrics as scalars: judge score, ROUGE-L, final and
best loss. It is written with TensorBoard's own writer and summary protos (no TensorFlow, no torch)
into a temporary folder that replaces the old one in one rename, so a re-run never leaves
duplicate runs in the view.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from filelib import atomic_dir
from tools.report.events import write_event_file

# column of the report table -> (metric tag, what it is)
METRICS = {
    "judge_mean": ("report/judge_score", "judge score (mean; see report.md for its 95 % interval)"),
    "rougeL": ("report/rougeL", "ROUGE-L against the references"),
    "final_loss": ("report/final_loss", "last train/loss logged"),
    "best_loss": ("report/best_loss", "lowest train/loss logged"),
    "final_eval_loss": ("report/final_eval_loss", "last eval/loss logged"),
    "answer_words": ("report/answer_words", "mean answer length in words"),
}
EXTRA = ("model", "label", "status")


def _clean(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool):
        return v
    if hasattr(v, "item"):  # numpy scalars from pandas
        v = v.item()
    if isinstance(v, (int, float)):
        return float(v)
    return str(v)


def _text(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def hparam_values(table: pd.DataFrame, keys: list[str]) -> list[dict]:
    """Per row, {name: bool | float | str}, one type per hyperparameter as the HParams plugin needs;
    a value a run does not have (the base model's rank) is left out rather than invented."""
    rows = [{k: _clean(row.get(k)) for k in [*EXTRA, *keys]} for _, row in table.iterrows()]
    for k in [*EXTRA, *keys]:
        if len({type(r[k]) for r in rows if r[k] is not None}) > 1:
            for r in rows:  # mixed types: compare them as text
                if r[k] is not None:
                    r[k] = _text(r[k])
    return [{k: v for k, v in r.items() if v is not None} for r in rows]


def _tb_name(row) -> str:
    """`<model>/<variant>`; the base model as `<model>/_base` (a variant cannot start with `_`)."""
    model, _, variant = row["run"].split("/")
    return f"{model}/_base" if row["is_base"] else f"{model}/{variant}"


def write_hparams(tb_root: str | Path, table: pd.DataFrame, keys: list[str]) -> Path:
    """Replace `tb_root` with the experiment and one run folder per table row."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp  # api.py imports keras/TensorFlow

    tb_root = Path(tb_root)
    now = time.time()
    values = hparam_values(table, keys)
    names = [*EXTRA, *keys]
    hparams = []
    for k in names:
        seen = sorted({r[k] for r in values if k in r}, key=str)
        domain = hp.Discrete(seen) if seen and len(seen) <= 50 else None
        hparams.append(hp.HParam(k, domain))
    metrics = [
        hp.Metric(tag, display_name=col, description=desc)
        for col, (tag, desc) in METRICS.items()
        if col in table and table[col].notna().any()
    ]
    status_of = {
        "finished": api_pb2.STATUS_SUCCESS,
        "base": api_pb2.STATUS_SUCCESS,
        "failed": api_pb2.STATUS_FAILURE,
        "running": api_pb2.STATUS_RUNNING,
    }

    def write(folder: Path, events: list) -> None:
        write_event_file(folder, events, now)

    with atomic_dir(tb_root) as tmp:
        config = hp.hparams_config_pb(hparams=hparams, metrics=metrics, time_created_secs=now)
        write(tmp, [event_pb2.Event(wall_time=now, summary=config)])
        for (_, row), hv in zip(table.iterrows(), values, strict=True):
            events = [
                event_pb2.Event(
                    wall_time=now, summary=hp.hparams_pb(hv, trial_id=row["run"], start_time_secs=now)
                )
            ]
            step = int(row["steps"]) if pd.notna(row.get("steps")) else 0
            for col, (tag, _) in METRICS.items():
                v = row.get(col)
                if v is not None and pd.notna(v):
                    s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(v))])
                    events.append(event_pb2.Event(wall_time=now, step=step, summary=s))
            end = plugin_data_pb2.SessionEndInfo(
                status=status_of.get(row["status"], api_pb2.STATUS_UNKNOWN), end_time_secs=now
            )
            meta = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end))
            s = summary_pb2.Summary(
                value=[
                    summary_pb2.Summary.Value(
                        tag=metadata.SESSION_END_INFO_TAG, metadata=meta, tensor=metadata.NULL_TENSOR
                    )
                ]
            )
            events.append(event_pb2.Event(wall_time=now, step=step, summary=s))
            write(tmp / _tb_name(row), events)
    return tb_root
