"""Every run of a sweep in an experiment tracker: TRACK=tensorboard (default) | mlflow | wandb | swanlab.

LLaMA-Factory's own `report_to` is passed through (tensorboard stays on: the report reads runs/ events),
so the trainer logs its parameters, losses and learning rates; this module adds what LLaMA-Factory does not
know: the study, the variant, the data's hash (each dataset file's sha256, as in run.json), the node and
attempts of a Ray run, the dev and test judge scores with their 95 % intervals, the decision
(reports/<study>/choice.json) and the report's files as artifacts.

MLflow: $MLFLOW_TRACKING_URI, else the embedded store under the output root: a SQLite backend
(mlruns/mlflow.db) and an artifact folder (mlruns/artifacts); `make mlflow` serves it on 127.0.0.1. One
MLflow run per training run (experiment = the study), made before training and handed to the trainer as
MLFLOW_RUN_ID, plus one run `<study>: decision` carrying choice.json and the report. A server that
cannot be reached stops the sweep before training (exit 2); a tracking failure after training is one
warning line: the runs' own files (run.json, DONE, adapter, events) are never touched by tracking.

W&B: offline only unless WANDB_MODE says otherwise (runs under <out root>/wandb; `wandb sync` uploads
them); no key is ever written to a file. SwanLab: its own mode from the environment. Both need their
package installed; otherwise the sweep stops before training and says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import read_json_object, run_main, sha256_text
from tools.core.args import command, opt
from tools.core.paths import Run, out_root, report_dir, venv_bin
from tools.core.profiles import ConfigError
from tools.core.runinfo import data_fingerprint

TRACKERS = ("tensorboard", "mlflow", "wandb", "swanlab")
TAG = "smalldata"


class TrackingError(ConfigError):
    """The tracker cannot be used: refused before training (exit 2)."""


def mlruns() -> Path:
    return out_root() / "mlruns"


def mlflow_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlruns() / 'mlflow.db'}"


def _reachable(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        r = requests.get(uri.rstrip("/") + "/health", timeout=5)
        ok, why = r.status_code == 200, f"HTTP {r.status_code}"
    except requests.RequestException as e:
        ok, why = False, type(e).__name__
    if not ok:
        raise TrackingError(
            f"TRACK=mlflow: the tracking server {uri} cannot be reached ({why}); start it (`make mlflow`) or "
            f"unset MLFLOW_TRACKING_URI to use the embedded store in {mlruns()}"
        )


def data_hash(job: dict) -> tuple[str, dict]:
    fp = data_fingerprint(job["dataset"], job["dataset_dir"])
    return sha256_text(json.dumps(fp, sort_keys=True)), fp


class Tracker:
    """What a sweep tracks; `prepare` fills each job's report_to and env before training."""

    def __init__(self, kind: str, study: str, model: str):
        if kind not in TRACKERS:
            raise TrackingError(f"TRACK={kind!r}: one of {', '.join(TRACKERS)}")
        self.kind, self.study, self.model = kind, study, model
        self.client = self.experiment = None
        self.run_ids: dict[str, str] = {}
        if kind in ("wandb", "swanlab") and importlib.util.find_spec(kind) is None:
            raise TrackingError(
                f"TRACK={kind} needs the {kind} package (pip install {kind}); it is not installed"
            )
        if kind == "mlflow":
            if importlib.util.find_spec("mlflow") is None:
                raise TrackingError(
                    "TRACK=mlflow needs MLflow: pip install -r requirements.lock (mlflow-skinny)"
                )
            self.uri = mlflow_uri()
            _reachable(self.uri)
            self._connect()

    def _connect(self) -> None:
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("sqlite:"):
            (mlruns() / "artifacts").mkdir(parents=True, exist_ok=True)
        try:
            self.client = MlflowClient(self.uri)
            exp = self.client.get_experiment_by_name(self.study)
            if exp is None:
                where = (mlruns() / "artifacts").as_uri() if self.uri.startswith("sqlite:") else None
                self.experiment = self.client.create_experiment(self.study, artifact_location=where)
            else:
                self.experiment = exp.experiment_id
        except Exception as e:  # the store itself refuses: one line, before training
            raise TrackingError(
                f"TRACK=mlflow: the store {self.uri} refused ({type(e).__name__}: {e})"
            ) from e

    def prepare(self, jobs: list[dict]) -> None:
        """report_to for LLaMA-Factory and the tracker's variables for each training child."""
        if self.kind == "tensorboard":  # the rendered config's own report_to: tensorboard
            return
        for job in jobs:
            job["resolved_config"]["report_to"] = ["tensorboard", self.kind]
            env = job.setdefault("env", {})
            if self.kind == "wandb":
                env.update(WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), WANDB_PROJECT=self.study)
                env.update(WANDB_DIR=str(out_root()), WANDB_NAME=job["run"])
            elif self.kind == "swanlab":
                env.update(SWANLAB_PROJECT=self.study)
            elif self.kind == "mlflow":
                run_id = self._run_for(job)
                self.run_ids[job["run"]] = run_id
                env.update(
                    MLFLOW_TRACKING_URI=self.uri, MLFLOW_EXPERIMENT_NAME=self.study, MLFLOW_RUN_ID=run_id
                )
                job["tracking"] = {"mlflow_run_id": run_id, "uri": self.uri}

    def _run_for(self, job: dict) -> str:
        """The MLflow run of this training run and config (a resumed or re-run sweep reuses it)."""
        found = self.client.search_runs(
            [self.experiment],
            f"tags.`{TAG}.run` = '{job['run']}' and tags.`{TAG}.config_sha256` = '{job['config_sha256']}'",
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        try:
            digest, fp = data_hash(job)
        except (ValueError, OSError):  # an unregistered set: the run fails on its own, with its own line
            digest, fp = "unavailable", {}
        tags = {
            f"{TAG}.run": job["run"],
            f"{TAG}.study": job["study"],
            f"{TAG}.variant": job["variant"],
            f"{TAG}.model": job["model"],
            f"{TAG}.config_sha256": job["config_sha256"],
            f"{TAG}.data_sha256": digest,
            **{f"{TAG}.data.{k}": str(v) for k, v in fp.items()},
            f"{TAG}.git_commit": str(job.get("git_commit")),
        }
        run = self.client.create_run(self.experiment, tags=tags, run_name=job["variant"])
        return run.info.run_id

    def finish(self, results: list[dict]) -> None:
        """After training, evaluation and the report: what LLaMA-Factory does not know. Never raises."""
        if self.kind != "mlflow":
            if self.kind == "wandb":
                print(
                    f"tracking: W&B runs under {out_root() / 'wandb'} (upload: wandb sync {out_root() / 'wandb'}/offline-run-*)"
                )
            return
        try:
            self._finish_mlflow(results)
            print(
                f"tracking: {len(self.run_ids)} run(s) and the decision logged to MLflow at {self.uri} (experiment {self.study})"
            )
        except Exception as e:
            print(
                f"tracking: MLflow logging failed ({type(e).__name__}: {e}); the runs' own files are untouched"
            )

    def _finish_mlflow(self, results: list[dict]) -> None:
        c = self.client
        choice = read_json_object(report_dir(self.study) / "choice.json", {})
        for res in results:
            run_id = self.run_ids.get(res["run"])
            if not run_id:
                continue
            run = Run.parse(res["run"])
            rec = read_json_object(run.run_json, {})
            c.set_tag(run_id, f"{TAG}.status", res["status"])
            for k in ("node", "attempts"):
                if rec.get(k) is not None:
                    c.set_tag(run_id, f"{TAG}.{k}", str(rec[k]))
            for k in ("wall_s", "peak_rss_mb", "train_loss"):
                if isinstance(res.get(k), (int, float)):
                    c.log_metric(run_id, f"{TAG}.{k}", float(res[k]))
            for scores in sorted(run.output_dir.glob("eval/*/*/scores.json")):
                self._log_scores(run_id, scores, f"{scores.parent.parent.name}.{scores.parent.name}")
            for p in choice.get("candidates") or []:
                if p.get("trained") == res["run"] and isinstance(p.get("score"), (int, float)):
                    self._log_point(run_id, f"dev.{p['run'].rsplit('/', 1)[-1]}.{p['decoding']}", p)
            best = (choice.get("best") or {}).get("trained")
            c.set_tag(run_id, f"{TAG}.chosen", str(best == res["run"]).lower())
            status = c.get_run(run_id).info.status
            if status in ("SCHEDULED", "RUNNING"):
                c.set_terminated(run_id, "FINISHED" if res["status"] in ("finished", "done") else "FAILED")
        self._log_decision(choice)

    def _log_scores(self, run_id: str, path: Path, label: str) -> None:
        s = read_json_object(path, {})
        kind = "dev" if label.split(".", 1)[0].endswith("_dev") else "test"
        self._log_point(run_id, f"{kind}.{label}", {"score": s.get("mean"), "ci95": s.get("ci95")})

    def _log_point(self, run_id: str, key: str, p: dict) -> None:
        if isinstance(p.get("score"), (int, float)):
            self.client.log_metric(run_id, f"judge.{key}", float(p["score"]))
        ci = p.get("ci95")
        if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
            self.client.log_metric(run_id, f"judge.{key}.ci95_lo", float(ci[0]))
            self.client.log_metric(run_id, f"judge.{key}.ci95_hi", float(ci[1]))

    def _log_decision(self, choice: dict) -> None:
        c = self.client
        run = c.create_run(
            self.experiment,
            run_name=f"{self.study}: decision",
            tags={f"{TAG}.study": self.study, f"{TAG}.kind": "decision"},
        )
        rid = run.info.run_id
        best = choice.get("best") or {}
        c.set_tag(rid, f"{TAG}.chosen", str(best.get("run")))
        c.set_tag(rid, f"{TAG}.decided_by", str(choice.get("metric")))
        c.set_tag(rid, f"{TAG}.note", str(choice.get("note", ""))[:5000])
        if best:
            self._log_point(rid, f"dev.chosen.{best.get('decoding')}", best)
        folder = report_dir(self.study)
        if folder.is_dir() and any(folder.iterdir()):
            c.log_artifacts(rid, str(folder), "report")
        c.set_terminated(rid, "FINISHED")


# ---------------------------------------------------------------------------------------- make mlflow
@dataclass
class ServeArgs:
    port: int = opt(5000, help="the port on 127.0.0.1", min=1)
    dry_run: bool = opt(False, help="print the command, start nothing")


# MLflow 3's server also starts a job runner (seven huey consumer processes) for its server-side GenAI
# jobs, which tracking never asks for: measured here, 10.6 CPU-s against 5.6 to be up, and 13 CPU-s
# more in its next 15 s against 0.1. Off unless the caller's environment turns it on.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def serve_env(base: dict | None = None) -> dict:
    """The tracking server's environment: the caller's, with SERVER_ENV's defaults where it sets nothing."""
    return {**SERVER_ENV, **(os.environ if base is None else base)}


def serve_command(port: int) -> list[str]:
    """MLflow's tracking server on the embedded store, on 127.0.0.1 only."""
    cmd = [*venv_bin("mlflow"), "server", "--backend-store-uri", f"sqlite:///{mlruns() / 'mlflow.db'}"]
    cmd += [
        "--artifacts-destination",
        str(mlruns() / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return cmd


@command(ServeArgs, __doc__)
def main(a: ServeArgs) -> int:
    if importlib.util.find_spec("mlflow") is None:
        print("error: MLflow is not installed: pip install -r requirements.lock", file=sys.stderr)
        return 2
    cmd = serve_command(a.port)
    env = serve_env()
    print(" ".join([*(f"{k}={shlex.quote(env[k])}" for k in SERVER_ENV), shlex.join(cmd)]))
    ui = Path(importlib.util.find_spec("mlflow").origin).parent / "server" / "js" / "build" / "index.html"
    if not ui.exists():
        print(
            "note: mlflow-skinny serves the tracking API without the web UI; for the UI on the same store run "
            f"`uvx --from mlflow==3.17.2 mlflow ui --backend-store-uri sqlite:///{mlruns() / 'mlflow.db'}` "
            "(docs/scale-and-tracking.md)"
        )
    if a.dry_run:
        return 0
    (mlruns() / "artifacts").mkdir(parents=True, exist_ok=True)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    run_main(main)
