"""Preflight for a study: training's checks (GPU, extras, base model, disk, the memory bill; tools.train)
and the evaluation's (the forgetting guard's zero-shot tasks known to lm-eval; tools.eval), before a sweep
spends anything. A failed check refuses with exit status 2; nothing is written.

Usage:
    python -m tools.flows.preflight --study rank --model llama2_7b [--only r8] [--set key=value ...]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from filelib import run_main
from tools.core.args import command, opt
from tools.core.profiles import ConfigError, list_profiles
from tools.eval import check_tasks, expand
from tools.train import Rendered, list_studies, load_study, parse_set, render_study, set_problems
from tools.train import preflight_check as train_checks


def check(rendered: list[Rendered], model: str, dev: dict | None = None, remote: str | None = None):
    """Every check for these runs of one profile: the training side's report, with the zero-shot tasks of
    each study's `zeroshot:` list added (lm-eval's task index, built in this process)."""
    rep = train_checks(rendered, model, dev, remote=remote)
    check_zeroshot(rep, {r.run.study for r in rendered})
    return rep


def check_zeroshot(rep, studies: set[str]) -> None:
    """The forgetting guard's zero-shot tasks (a spec's `zeroshot:`) known to lm-eval before any run trains."""
    for study in sorted(studies):
        try:
            tasks = load_study(study).get("zeroshot")
        except ConfigError:  # rendered from elsewhere (tests, --configs-dir): no spec to read
            continue
        if tasks:
            try:
                check_tasks(tasks)
                rep.add("zero-shot", True, f"zero-shot tasks known: {', '.join(expand(tasks))}")
            except ValueError as e:
                rep.add("zero-shot", False, str(e))


def preflight(study: str, model: str, overrides: dict | None = None, only: list[str] | None = None, dev=None):
    """`check` for a study's runs, rendered in memory."""
    return check(render_study(study, model, overrides, only), model, dev)


@dataclass
class PreflightArgs:
    study: str = opt(help="a study in templates/studies/", required=True, choices=list_studies)
    model: str = opt(help="a profile in templates/profiles/", required=True, choices=list_profiles)
    only: list[str] | None = opt(None, help="comma-separated variants", split=",")
    sets: list[str] = opt(
        [], help="override a template variable", repeat=True, flag="--set", metavar="KEY=VALUE"
    )

    def check(self) -> list[str]:
        return set_problems(self.sets)


@command(PreflightArgs, __doc__)
def main(a: PreflightArgs) -> int:
    try:
        rep = preflight(a.study, a.model, parse_set(a.sets), a.only)
    except ConfigError as e:
        print(f"preflight: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(rep.lines()))
    if not rep.ok:
        print(
            "preflight: refused (fix the FAIL lines, or pass --skip-preflight to the sweep)", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    run_main(main)
