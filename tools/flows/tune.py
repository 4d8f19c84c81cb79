"""Search a study's space with Optuna, pruning on the per-epoch dev evaluation; each trial an ordinary run.

A study spec declares its space and, as data, the sampler and the pruner (templates/studies/lr.yaml):

    search:
      params:
        learning_rate: {type: float, low: 5.0e-5, high: 1.0e-3, log: true}
        lora_rank: {type: int, low: 4, high: 16, step: 4}
        lora_target: {choices: [all, "q_proj,v_proj"]}
      sampler: {name: tpe, seed: 0}              # tpe | random | qmc, and their keyword arguments
      pruner: {name: median, n_startup_trials: 2} # median | hyperband | percentile | none
      base: lr2e-4                               # the variant a trial starts from (default: the first)

The objective is the study's decision rule's first criterion on dev (tools.report.trials: LLaMA-Factory's
dev eval_loss per epoch where the first criterion needs answers). Each trial trains `t<number>_<params>`
under saves/<model>/lora/<study>/ (tools.flows.trial), and a trial whose epoch-N dev value is worse than
the pruner's bar stops there (pruned, with the epoch it reached). The study lives in Optuna's RDB storage,
reports/<study>/tune.db (SQLite): a killed tune resumes where it stopped. A trial left RUNNING by the kill
is marked FAIL (user attr `interrupted`) and re-queued with the same parameters and the same run folder,
which resumes from its last checkpoint: no trial is lost or trained twice. One tune per study at a time.

With --runner ray (make tune RUNNER=ray) trials train in parallel as Ray tasks of the sweep's Ray runner,
each placed by its preflight bill, while this process keeps the study and its pruner (tools.flows.tune_ray).

Then reports/<study>/tune.md, tune.html, tune_trials.csv, tune_slice.png (tools.report.trials). With
--evaluate the best trial's run goes through the sweep's evaluation: its epochs on dev, the rule's choice,
the test set scored once for it, and the study's report.

Usage:
    python -m tools.flows.tune --study lr --model smollm2_135m --trials 6 [--set key=value ...]
        [--dataset-dir data] [--seed N] [--name TAG] [--evaluate] [--skip-preflight]
        [--runner ray [--parallel N] [--shared-saves DIR]]   # trials in parallel on Ray (tools.flows.tune_ray)
"""

from __future__ import annotations

import fcntl
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_json, run_main
from tools.core.args import command, opt
from tools.core.paths import DATA, Run, report_dir
from tools.core.profiles import ConfigError, load_profile
from tools.core.runinfo import data_fingerprint
from tools.flows import trial as T
from tools.report import objective_of, write_tune_report
from tools.train import load_study, parse_set, render_study

SAMPLERS = ("tpe", "random", "qmc")
PRUNERS = ("median", "hyperband", "percentile", "none")


def make_sampler(spec: dict, seed: int | None):
    import optuna

    kw = dict(spec or {})
    name = kw.pop("name", "tpe")
    if seed is not None:
        kw["seed"] = seed
    cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    cls["qmc"] = optuna.samplers.QMCSampler
    if name not in cls:
        raise ConfigError(f"search.sampler: {name!r} is not one of {SAMPLERS}")
    try:
        return cls[name](**kw)
    except TypeError as e:  # an argument the sampler does not take
        raise ConfigError(f"search.sampler {spec}: {e}") from None


def make_pruner(spec: dict, epochs: int):
    import optuna

    kw = dict(spec or {})
    name = kw.pop("name", "median")
    if name == "hyperband":
        kw.setdefault("min_resource", 1)
        kw.setdefault("max_resource", max(1, epochs))
    cls = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner}
    cls |= {"percentile": optuna.pruners.PercentilePruner, "none": optuna.pruners.NopPruner}
    if name not in cls:
        raise ConfigError(f"search.pruner: {name!r} is not one of {PRUNERS}")
    try:
        return cls[name](**kw)
    except TypeError as e:  # an argument the pruner does not take
        raise ConfigError(f"search.pruner {spec}: {e}") from None


def recover(ost) -> list[int]:
    """Trials a killed tune left RUNNING: marked FAIL (interrupted), re-queued with the same run folder."""
    from optuna.trial import TrialState

    done = []
    for t in ost.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ost._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        ost._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        ost.enqueue_trial(
            t.params, user_attrs={"resume_run": t.user_attrs.get("run"), "requeued_from": t.number}
        )
        done.append(t.number)
    return done


def used(ost) -> int:
    """Trials that count towards --trials: complete, pruned, and failures that were not interruptions."""
    from optuna.trial import TrialState

    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
        for t in ost.get_trials(deepcopy=False)
    )


def run_one(ost, space, objective, ctx: dict) -> dict:
    """Ask, train here with pruning, tell: one trial, its row for the status line."""
    started = T.start_trial(ost, space, ctx)
    if isinstance(started, dict):  # refused before training
        return started
    trial, run, job = started
    job["warm"] = ctx["warm"]
    reported: dict[int, float] = {}
    res, stop, killed = T.watch_train(
        job, lambda: T.report_epochs(trial, run, objective.metric, reported), ctx["poll"]
    )
    return T.finish_trial(ost, trial, run, reported, res, stop, killed, objective)


def rows_of(ost) -> list[dict]:
    rows = []
    for t in ost.get_trials(deepcopy=False):
        state = t.state.name + (" (interrupted, re-queued)" if t.user_attrs.get("interrupted") else "")
        rows.append(
            {"number": t.number, "variant": t.user_attrs.get("run", "-"), "params": dict(t.params)}
            | {
                "epochs": {int(k): v for k, v in t.intermediate_values.items()},
                "value": t.value,
                "state": state,
            }
            | {k: t.user_attrs.get(k) for k in ("epoch_reached", "steps_run", "steps_planned", "steps_saved")}
        )
    return rows


def importances(ost) -> dict | None:
    import optuna
    from optuna.trial import TrialState

    done = [t for t in ost.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2 or not any(len({repr(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        return None
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(ost).items()}
    except (RuntimeError, ValueError, ImportError) as e:
        print(f"parameter importances not computed: {e}")
        return None


def summarize(ost, objective, ctx: dict) -> dict:
    from optuna.trial import TrialState

    rows = rows_of(ost)
    counts = {s: sum(r["state"].startswith(s) for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    planned = sum(r.get("steps_planned") or 0 for r in rows if not r["state"].startswith("FAIL"))
    run_ = sum(r.get("steps_run") or 0 for r in rows if not r["state"].startswith("FAIL"))
    summary = {**{k: ctx[k] for k in ("study", "model", "sampler", "pruner", "storage")}, "counts": counts}
    summary |= {
        "metric": objective.metric,
        "direction": objective.direction,
        "objective_note": objective.note,
    }
    summary["steps"] = {"planned": planned, "run": run_, "saved": planned - run_}
    summary["steps"]["saved_share"] = (planned - run_) / planned if planned else 0.0
    done = sorted(
        (t for t in ost.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
        key=lambda t: t.value if objective.direction == "minimize" else -t.value,
    )
    if done:
        b = done[0]
        epoch = next(e for e, v in sorted(b.intermediate_values.items()) if v == b.value)
        summary["best"] = {"number": b.number, "run": f"{ctx['model']}/{ctx['study']}/{b.user_attrs['run']}"}
        summary["best"] |= {"epoch": int(epoch), "value": b.value, "params": b.params}
        if len(done) > 1:
            summary["best"]["runner_up_diff"] = abs(done[1].value - b.value)
            summary["best"]["rule_effect"] = (
                f"a difference of at least {objective.min_diff:g}"
                if objective.min_diff
                else "no eval_loss effect"
            )
    return summary


# ---------------------------------------------------------------------------------------- CLI
@dataclass
class TuneArgs:
    study: str = opt(help="a study spec with a `search:` block", required=True)
    model: str = opt("smollm2_135m", help="a profile in templates/profiles/")
    trials: int = opt(6, help="trials in total (a resumed tune counts those already done)", min=1)
    sets: list[str] = opt(
        [], help="override a template variable", repeat=True, flag="--set", metavar="KEY=VALUE"
    )
    dataset_dir: Path = opt(DATA, help="LLaMA-Factory dataset_dir")
    sampler: str = opt("", help="the sampler as YAML, replacing the spec's, e.g. '{name: random, seed: 1}'")
    pruner: str = opt("", help="the pruner as YAML, replacing the spec's, e.g. '{name: hyperband}'")
    seed: int | None = opt(None, help="the sampler's seed (default: the spec's)", nonneg=True)
    name: str = opt("", help="a tag for the Optuna study (default: <study>-<model>)")
    evaluate: bool = opt(
        False, help="score the best trial through the sweep's evaluation (dev choice, test once)"
    )
    skip_preflight: bool = opt(False, help="train even when a preflight check fails")
    warm: bool = opt(
        True, help="train each trial as a child of a warm fork server (LLaMA-Factory imported once)"
    )
    poll: float = opt(0.5, help="seconds between looks at a training run's epochs", gt=0)
    runner: str = opt("local", help="where trials train", choices=("local", "ray"))
    parallel: int = opt(
        0,
        help="--runner ray: trials training at once (0: one per GPU of the cluster, 1 without)",
        nonneg=True,
    )
    shared_saves: str | None = opt(
        None,
        help="--runner ray on several nodes: the shared folder holding saves/",
        env="SMALLDATA_SHARED_SAVES",
    )

    def check(self) -> list[str]:
        return ["--parallel needs --runner ray"] if self.parallel and self.runner != "ray" else []


def _data(text: str, flag: str) -> dict | None:
    import yaml

    if not text:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{flag} {text!r}: not YAML ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} {text!r}: give a mapping, e.g. '{{name: median, n_startup_trials: 1}}'")
    return value


def require_data(config: dict, dataset_dir: Path) -> None:
    """A run's training and dev datasets (each a name or LLaMA-Factory's comma-joined list) registered in
    dataset_dir with their files present; else ConfigError, naming the one missing and `make data`."""
    names = ",".join(filter(None, [config.get("dataset"), config.get("eval_dataset")]))
    try:
        data_fingerprint(names, dataset_dir)
    except ValueError as e:  # plugins.publishing's RegistryError: not registered, or its file missing
        raise ConfigError(str(e)) from None


def tune(a: TuneArgs) -> dict:
    spec = load_study(a.study)
    where = f"templates/studies/{a.study}.yaml"
    if "search" not in spec:
        raise ConfigError(f"{where}: no `search:` block (see docs/tune.md)")
    search = spec["search"]
    space = T.parse_space(search, where)
    base = str(search.get("base") or next(iter(spec["variants"])))
    if base not in map(str, spec["variants"]):
        raise ConfigError(f"{where}: search.base {base!r} is not a variant")
    overrides = parse_set(a.sets)
    first = render_study(a.study, a.model, overrides, [base])[0]  # checks the profile and the overrides
    if not first.config.get("eval_dataset"):
        raise ConfigError(f"profile {a.model!r} sets no eval_dataset: no dev value per epoch to prune on")
    require_data(first.config, a.dataset_dir)  # a trial without its data fails, and counts towards --trials
    try:
        objective = objective_of(a.study, search.get("objective"))
    except ValueError as e:  # a rule that cannot be applied, an objective not measured per epoch
        raise ConfigError(f"{where}: {e}") from None
    bill, ray = None, a.runner == "ray"
    if not a.skip_preflight:
        from tools.flows.preflight import check as preflight_check

        rep = preflight_check([first], a.model, remote=os.environ.get("RAY_ADDRESS") if ray else None)
        print("\n".join(rep.lines()), flush=True)
        if not rep.ok:
            bad = "; ".join(f"{n}: {d}" for n, ok, d in rep.checks if not ok)
            raise ConfigError(f"preflight refused the tune ({bad}); --skip-preflight overrides")
        bill = rep.bills.get(base)
    cluster = None
    if ray:  # a base variant no node can hold, or outputs the nodes do not share: refused before writing
        from tools.train import ray_cluster

        cluster = ray_cluster([{"run": first.run.name, "memory_estimate": bill}], a.shared_saves)
    out = report_dir(a.study)
    name = a.name or f"{a.study}-{a.model}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f".tune-{name}.lock", "w") as lock:  # held for the whole search
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"another tune of {name} is running (lock {lock.name})") from None
            return _search(a, search, space, base, overrides, first, objective, out, name, cluster)
    finally:
        if cluster:
            cluster.close()


def _search(
    a: TuneArgs, search, space, base, overrides, first, objective, out: Path, name: str, cluster
) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out / 'tune.db'}"
    epochs = int(first.config.get("num_train_epochs") or 1)
    sampler = _data(a.sampler, "--sampler") or search.get("sampler") or {"name": "tpe"}
    pruner = _data(a.pruner, "--pruner") or search.get("pruner") or {"name": "median"}
    ost = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(sampler, a.seed),
        pruner=make_pruner(pruner, epochs),
        direction=objective.direction,
        load_if_exists=True,
    )
    ctx = {"study": a.study, "model": a.model, "base": base, "overrides": overrides, "data": a.dataset_dir}
    ctx |= {
        "warm": a.warm,
        "poll": a.poll,
        "sampler": sampler,
        "pruner": pruner,
        "storage": str(out / "tune.db"),
    }
    if ost.trials:  # a resumed search: a fresh seed, or the sampler would repeat its first proposals
        seed = (sampler.get("seed") if a.seed is None else a.seed) or 0
        ost.sampler = make_sampler({**sampler, "seed": seed + len(ost.trials)}, None)
    requeued = recover(ost)
    if requeued:
        print(f"resumed {name}: trial(s) {requeued} were interrupted; re-queued on the same run folders")
    print(
        f"tune {name}: objective dev {objective.metric} ({objective.direction}); {objective.note}", flush=True
    )

    def show(row: dict) -> None:
        vals = " ".join(f"ep{e} {v:.4f}" for e, v in sorted(row.get("epochs", {}).items()))
        print(
            f"[{used(ost)}/{a.trials}] trial {row['number']:>3} {row['run']:<40} {row['state']:<8} {vals}  "
            + row.get("note", ""),
            flush=True,
        )

    if cluster:
        from tools.flows import tune_ray

        ctx |= {"parallel": a.parallel, "skip_preflight": a.skip_preflight}
        tune_ray.search(cluster, ost, space, objective, ctx, a.trials, used, show)
    while used(ost) < a.trials and not cluster:
        show(run_one(ost, space, objective, ctx))
    summary = summarize(ost, objective, ctx)
    paths = write_tune_report(out, summary, rows_of(ost), importances(ost))
    atomic_write_json(out / "tune.json", summary)
    best = summary.get("best")
    print(
        f"best: {best['run']}@epoch{best['epoch']} dev {objective.metric} {best['value']:.4f}"
        if best
        else "best: none"
    )
    s = summary["steps"]
    print(f"steps: {s['run']} of {s['planned']} ({s['saved_share']:.0%} saved by pruning); report {paths[0]}")
    if a.evaluate and best:
        from tools.flows.evaluation import evaluate

        run = Run.parse(best["run"])
        testset = load_profile(a.model).get("eval_testset", "demo_eval")
        evaluate(
            [Run.base(a.model), run],
            testset,
            a.study,
            a.dataset_dir,
            dev=first.config["eval_dataset"],
            model=a.model,
            warm=a.warm and a.runner == "local",
        )
    return summary


@command(TuneArgs, __doc__)
def main(a: TuneArgs) -> int:
    try:
        summary = tune(a)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary["counts"]["COMPLETE"] else 1


if __name__ == "__main__":
    run_main(main)
