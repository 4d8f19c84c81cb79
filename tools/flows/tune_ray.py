"""`--runner ray` for the search (tools.flows.tune): trials train in parallel as Ray tasks of the sweep's Ray
runner (tools.train.ray_runner), each placed by its own preflight bill, while this process keeps Optuna's
study (ask and tell on the same SQLite storage, reports/<study>/tune.db) and its pruner.

Up to --parallel trials train at once (default: one per GPU of the cluster, or per $SMALLDATA_RAY_GPU
stand-in; 1 where it has none). Every --poll seconds this process reads each running trial's kept epochs
from its run folder, reports their dev value to Optuna and, when the pruner says stop, writes the run's stop
file (tools.flows.trial.stop_file) beside its folder in the shared saves/; the worker training that trial
(tools.flows.trial.train_trial) stops its training child by pid, as the local search does, and the trial is
told PRUNED at that epoch. A trial no node can hold is told FAIL with the placement's reason (the search
itself is refused, exit 2, before anything is written, when no node holds the base variant: tools.flows.tune).
A worker lost mid-trial is retried by Ray on another node, resuming the run from its checkpoint (as in a Ray
sweep).

Usage (through the search):
    python -m tools.flows.tune --study lr --model smollm2_135m --trials 6 --runner ray --parallel 2
    RAY_ADDRESS=auto SMALLDATA_SHARED_SAVES=/mnt/lab/out make tune STUDY=lr TRIALS=12 RUNNER=ray
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tools.flows import trial as T
from tools.flows.preflight import check as preflight_check
from tools.train import PlacementError, ray_note, render_study


@dataclass
class Running:
    trial: object
    run: object
    reported: dict = field(default_factory=dict)
    stop: int | None = None


def trial_bill(ctx: dict, params: dict) -> dict | None:
    """The trial's own memory bill (its rank or batch may differ from the base variant's); None unbilled."""
    if ctx.get("skip_preflight"):
        return None
    rendered = render_study(ctx["study"], ctx["model"], {**ctx["overrides"], **params}, [ctx["base"]])
    rep = preflight_check(rendered, ctx["model"], remote=os.environ.get("RAY_ADDRESS"))
    return rep.bills.get(ctx["base"])


def slots(c, parallel: int) -> int:
    if parallel:
        return parallel
    return max(1, int(c.totals.get(c.gpu, 0)))


def search(c, ost, space, objective, ctx: dict, trials: int, used, show) -> None:
    """Run trials on the cluster `c` until `trials` count (used(ost)); show(row) prints each as it ends."""
    from optuna.trial import TrialState

    width = slots(c, ctx.get("parallel", 0))
    print(f"ray: up to {width} trial(s) at once", flush=True)
    running: dict = {}
    while True:
        while len(running) < width and used(ost) + len(running) < trials:
            started = T.start_trial(ost, space, ctx)
            if isinstance(started, dict):
                show(started)
                continue
            trial, run, job = started
            job["memory_estimate"] = trial_bill(ctx, dict(trial.params))
            try:
                want = c.fit([job])[job["run"]]
            except PlacementError as e:
                trial.set_user_attr("error", str(e))
                ost.tell(trial, state=TrialState.FAIL)
                show({"number": trial.number, "run": run.name, "state": "FAIL", "note": str(e)})
                continue
            T.stop_file(run.output_dir).unlink(missing_ok=True)  # one left by a killed search
            running[c.submit(job, want, train=T.train_trial)] = Running(trial, run)
        if not running:
            return
        ready, _ = c.ray.wait(list(running), num_returns=1, timeout=ctx["poll"])
        for ref, r in running.items():
            if r.stop is None and ref not in ready:
                r.stop = T.report_epochs(r.trial, r.run, objective.metric, r.reported)
                if r.stop is not None:
                    T.stop_file(r.run.output_dir).write_text(str(r.stop))
        for ref in ready:
            r = running.pop(ref)
            show(finish(ost, c, ref, r, objective))


def finish(ost, c, ref, r: Running, objective) -> dict:
    try:
        res = c.ray.get(ref)
        res["note"] = ray_note(res)
        r.trial.set_user_attr("node", res.get("node"))
    except Exception as e:  # noqa: BLE001 - a task Ray gave up on (its retries spent): that trial fails
        res = {"status": "failed", "note": f"ray: {type(e).__name__}: {str(e).splitlines()[0]}"}
    if r.stop is None:  # its last epochs, as the local search's last look
        r.stop = T.report_epochs(r.trial, r.run, objective.metric, r.reported)
    T.stop_file(r.run.output_dir).unlink(missing_ok=True)
    return T.finish_trial(ost, r.trial, r.run, r.reported, res, r.stop, bool(res.get("killed")), objective)
