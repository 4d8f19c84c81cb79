"""Render study specs x model profiles into airtight LLaMA-Factory YAML under experiments/.

One Jinja template (templates/train.yaml.j2) holds every default; a model profile
(templates/profiles/<model>.yaml) and a study spec (templates/studies/<study>.yaml, its scientific,
nuisance and fixed hyperparameters and its variants) fill it in. A rendered file has no inheritance
and no variables left; each one is checked against LLaMA-Factory's own argument parser (its
dataclasses, extra keys refused) and against their field types before anything is written.

    experiments/<study>/<model>_lora_sft_<variant>.yaml

Usage:
    python -m tools.train.configs render --all                       # make configs: every study, committed profiles
    python -m tools.train.configs render --study rank --model llama2_7b [--only r16] [--out DIR]
           [--set max_steps_cap=12 --set model_name_or_path=/tmp/llama2-7b-shaped]
    python -m tools.train.configs check                              # make configs-check: non-zero when stale
    python -m tools.train.configs list                               # studies, variants and profiles
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from filelib import atomic_write_text, check_place, run_main
from tools.core.args import command, opt
from tools.core.paths import EXPERIMENTS, TEMPLATES, Run
from tools.core.profiles import (  # noqa: F401 (list_profiles, load_profile: part of this module's face)
    PROFILES,
    ConfigError,
    list_profiles,
    load_profile,
    read_yaml,
    rel,
    resolve_model_path,
)
from tools.train.template import (
    TRAIN_TEMPLATE,
    parse_set,
    set_problems,
    settable_keys,
    train_template,
    yaml_scalar,
)
from tools.train.template import check_keys as _check_keys
from tools.train.validate import check_ranges, validate_config

STUDIES = TEMPLATES / "studies"
# The profiles whose rendered files are committed (make configs / configs-check): what a GPU user runs,
# and the embedded default.
COMMITTED_PROFILES = ("smollm2_135m", "llama2_7b")
# Studies render in this order (then any other spec, alphabetically): the data study is HW5's question.
STUDY_ORDER = ("data", "rank", "lr", "target", "curriculum", "method", "epochs")
PROFILE_META = frozenset({"description", "capabilities"})
# `selections`: named datasets the study needs that `make data --all-strategies` registers (tools.data)
# `decoding`: the decoding names (points or policies, tools.eval) the sweep evaluates; a variant may set its own
STUDY_KEYS = frozenset(
    "question scientific nuisance fixed why variants selections decoding heldout zeroshot decision search".split()
)
# `search`: the space, sampler and pruner of `make tune` (tools/flows/tune.py checks it).
# `decision`: the study's own decision rule (tools/report/rule.py checks it; default templates/decision.yaml).
# `heldout` / `zeroshot`: the forgetting guard the sweep's evaluation adds (perplexity on a held-out general
# set; zero-shot accuracy through lm-eval on the tasks listed)
VARIANT_META = frozenset({"requires", "excludes", "decoding", "why"})  # `why`: what the variant changes


class Rendered(NamedTuple):
    run: Run
    text: str  # the YAML file's content
    config: dict  # the same, parsed
    parent: str | None  # the variant this one continues (curriculum stages)
    scientific: dict  # the scientific hyperparameters' values for this variant
    hparams: dict  # scientific + the main fixed values, for reports
    decoding: tuple = ("greedy",)  # what the sweep evaluates this run with (study or variant `decoding`)


# ---------------------------------------------------------------------------------------- reading
def list_studies() -> list[str]:
    names = {p.stem for p in STUDIES.glob("*.yaml")}
    return [s for s in STUDY_ORDER if s in names] + sorted(names - set(STUDY_ORDER))


def load_study(study: str) -> dict:
    path = STUDIES / f"{study}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown study {study!r}: no {rel(path)} (have: {', '.join(list_studies())})")
    spec = read_yaml(path, "study spec")
    extra = set(spec) - STUDY_KEYS
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(extra)} (allowed: {sorted(STUDY_KEYS)})")
    if not isinstance(spec.get("variants"), dict) or not spec["variants"]:
        raise ConfigError(f"{path}: `variants` must map variant names to their values")
    for section in ("nuisance", "fixed", "why"):
        if not isinstance(spec.get(section) or {}, dict):
            raise ConfigError(f"{path}: `{section}` must be a mapping")
    if "heldout" in spec and not (isinstance(spec["heldout"], str) and spec["heldout"].strip()):
        raise ConfigError(f"{path}: `heldout` must name a registered dataset (perplexity on it: forgetting)")
    zs = spec.get("zeroshot")
    if "zeroshot" in spec and not (
        isinstance(zs, list) and zs and all(isinstance(t, str) and t.strip() and " " not in t for t in zs)
    ):
        raise ConfigError(f"{path}: `zeroshot` must list lm-eval task names (e.g. [python_mc, arc_easy])")
    if not isinstance(spec.get("scientific"), list) or not spec["scientific"]:
        raise ConfigError(f"{path}: `scientific` must list the keys the study varies")
    for name, values in spec["variants"].items():
        try:
            Run("m", study, str(name))  # raises for a name that is not path-safe
        except ValueError as e:
            raise ConfigError(f"{path}: variants: {e}") from None
        if not isinstance(values or {}, dict):
            raise ConfigError(f"{path}: variant {name!r} must be a mapping of keys to values")
    return spec


# ---------------------------------------------------------------------------------------- rendering
def _study_comment(study: str, spec: dict, values: dict, cfg: dict, overrides: dict) -> str:
    """The header's account of the study: each scientific, nuisance and fixed value, and why."""
    why = spec.get("why") or {}
    lines = [f"# Study `{study}`: {spec.get('question', '').strip()}"]
    if values.get("why"):
        lines.append(f"#   this variant: `{values['variant']}`")
        lines += [f"#              {wl}" for wl in textwrap.wrap(str(values["why"]), 96)]

    def block(label: str, keys: list[str]) -> None:
        for key in keys:
            if key in values:
                shown = yaml_scalar(values[key])
            elif key in cfg:
                shown = f"{yaml_scalar(cfg[key])} (template default)"
            else:
                shown = "off (template default)"
            lines.append(f"#   {label:<10} {key} = {shown}")
            if key in why:
                for wl in textwrap.wrap(str(why[key]), 96):
                    lines.append(f"#              {wl}")

    block("scientific", list(spec["scientific"]))
    block("nuisance", list((spec.get("nuisance") or {}).keys()))
    block("fixed", list((spec.get("fixed") or {}).keys()))
    if overrides:
        lines.append("#   OVERRIDES (not from the study spec; such a file is not committed):")
        lines += [f"#              {k} = {yaml_scalar(v)}" for k, v in overrides.items()]
    return "\n".join(lines)


def _variant_applies(prof: dict, values: dict) -> str | None:
    """None when the profile can run the variant, else why not."""
    caps = set(prof.get("capabilities") or [])
    need = set(values.get("requires") or [])
    bad = set(values.get("excludes") or [])
    if not need <= caps:
        return f"needs {sorted(need - caps)}, profile has {sorted(caps)}"
    if bad & caps:
        return f"excluded on {sorted(bad & caps)} profiles"
    return None


def render_study(
    study: str, model: str, overrides: dict | None = None, only: list[str] | None = None
) -> list[Rendered]:
    """Every variant of a study for one profile, in the spec's order; validated, nothing written."""
    overrides = dict(overrides or {})
    spec = load_study(study)
    prof = load_profile(model)
    spec_path, prof_path = STUDIES / f"{study}.yaml", PROFILES / f"{model}.yaml"
    _check_keys(prof, str(prof_path), PROFILE_META)
    for section in ("nuisance", "fixed"):
        _check_keys(spec.get(section) or {}, f"{spec_path} ({section})")
    _check_keys(overrides, "--set overrides")
    check_ranges(overrides, "--set", "--set {key}={value!r}")
    for key in spec["scientific"]:
        if key not in settable_keys():
            raise ConfigError(f"{spec_path}: scientific key {key!r} is not a template variable")
    if only and (unknown := sorted(set(only) - set(map(str, spec["variants"])))):
        have = ", ".join(map(str, spec["variants"]))
        raise ConfigError(f"{spec_path}: no variant(s) {unknown} (have: {have})")
    template = train_template()
    out: list[Rendered] = []
    for name, vvalues in spec["variants"].items():
        name, vvalues = str(name), dict(vvalues or {})
        if only and name not in only:
            continue
        where = f"{spec_path} (variant {name})"
        _check_keys(vvalues, where, VARIANT_META)
        if _variant_applies(prof, vvalues):
            continue
        run = Run(model, study, name)
        body = {k: v for k, v in vvalues.items() if k not in VARIANT_META}
        variant_why = {"why": vvalues["why"], "variant": name} if vvalues.get("why") else {}
        values = {
            **{k: v for k, v in prof.items() if k not in PROFILE_META},
            **(spec.get("fixed") or {}),
            **(spec.get("nuisance") or {}),
            **body,
            **overrides,
        }
        check_ranges(values, where)
        parent = values.get("continue_from")
        if parent is not None and parent not in spec["variants"]:
            raise ConfigError(f"{where}: continue_from {parent!r} is not a variant of this study")
        context = {
            **values,
            "model": model,
            "study": study,
            "variant": name,
            "config_path": rel(run.config),
            "profile_description": prof["description"],
            "study_comment": "",
        }
        try:
            # Twice: the header quotes the values the first pass resolved (template defaults included).
            first = yaml.safe_load(template.render(**context)) or {}
            context["study_comment"] = _study_comment(
                study, spec, {**values, **variant_why}, first, overrides
            )
            text = template.render(**context)
        except Exception as e:  # jinja2 errors: undefined variables, arithmetic on a wrong type
            raise ConfigError(f"{rel(TRAIN_TEMPLATE)} rendering {where}: {type(e).__name__}: {e}") from e
        if "{{" in text or "{%" in text:
            raise ConfigError(f"{rel(TRAIN_TEMPLATE)} rendering {where}: Jinja left in the output")
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(
                f"{rel(TRAIN_TEMPLATE)} rendering {where}: output is not valid YAML ({e})"
            ) from e
        validate_config(cfg, f"{rel(run.config)} (from {TRAIN_TEMPLATE.name} + {where})")
        sci = {k: cfg.get(k, values.get(k)) for k in spec["scientific"]}
        keep = "learning_rate lora_rank lora_alpha lora_target num_train_epochs max_steps dataset".split()
        hparams = {**{k: cfg[k] for k in keep if k in cfg}, **sci}
        decoding = vvalues.get("decoding") or spec.get("decoding") or ["greedy"]
        if not isinstance(decoding, list) or not all(isinstance(d, str) for d in decoding):
            raise ConfigError(f"{where}: `decoding` must list decoding names, e.g. [greedy, bytype_recipe]")
        out.append(Rendered(run, text, cfg, parent, sci, hparams, tuple(decoding)))
    return out


def render_run(study: str, model: str, variant: str, overrides: dict | None = None) -> tuple[Run, str]:
    """One rendered config: (its Run, the YAML text)."""
    found = render_study(study, model, overrides, only=[variant])
    if not found:
        why = _variant_applies(load_profile(model), load_study(study)["variants"][variant] or {})
        raise ConfigError(
            f"variant {variant!r} of study {study!r} is not rendered for profile {model!r}: {why}"
        )
    return found[0].run, found[0].text


def variant_names(study: str, model: str) -> list[str]:
    """A profile's variants of a study, in order, from the spec alone (rendering imports LLaMA-Factory)."""
    skipped = skipped_variants(study, model)
    return [str(n) for n in load_study(study)["variants"] if str(n) not in skipped]


def skipped_variants(study: str, model: str) -> dict[str, str]:
    prof, variants = load_profile(model), load_study(study)["variants"]
    return {str(n): why for n, v in variants.items() if (why := _variant_applies(prof, dict(v or {})))}


def write_rendered(rendered: list[Rendered], out_dir: Path = EXPERIMENTS, prune: bool = True) -> list[Path]:
    """Write files under out_dir/<study>/; with prune, remove that study's files of the model no longer rendered."""
    paths = []
    for r in rendered:
        path = out_dir / r.run.study / r.run.config.name
        if not path.exists() or path.read_text() != r.text:
            atomic_write_text(path, r.text)
        paths.append(path)
    if prune:
        for study, model in {(r.run.study, r.run.model) for r in rendered}:
            for old in (out_dir / study).glob(f"{model}_lora_sft_*.yaml"):
                if old not in paths:
                    old.unlink()
    return paths


def render_all(
    models: tuple[str, ...] = COMMITTED_PROFILES, studies: list[str] | None = None
) -> list[Rendered]:
    out: list[Rendered] = []
    for study in studies or list_studies():
        for model in models:
            out += render_study(study, model)
    return out


def check(out_dir: Path = EXPERIMENTS, models: tuple[str, ...] = COMMITTED_PROFILES) -> list[str]:
    """Names of committed files that differ from a fresh render (changed, missing or left over)."""
    stale: list[str] = []
    with tempfile.TemporaryDirectory(prefix="configs-check-") as tmp:
        fresh = Path(tmp)
        write_rendered(render_all(models), fresh, prune=False)
        want = {p.relative_to(fresh) for p in fresh.rglob("*.yaml")}
        have = (
            {p.relative_to(out_dir) for m in models for p in out_dir.glob(f"*/{m}_lora_sft_*.yaml")}
            if out_dir.exists()
            else set()
        )
        for rel in sorted(want | have):
            if rel not in have:
                stale.append(f"{out_dir.name}/{rel} (missing)")
            elif rel not in want:
                stale.append(f"{out_dir.name}/{rel} (no longer rendered)")
            elif not filecmp.cmp(fresh / rel, out_dir / rel, shallow=False):
                stale.append(f"{out_dir.name}/{rel} (differs)")
    return stale


# ---------------------------------------------------------------------------------------- CLI
@dataclass
class RenderArgs:
    """render study x profile into experiments/ (or --out)"""

    all: bool = opt(False, help=f"every study for {', '.join(COMMITTED_PROFILES)}")
    study: list[str] = opt([], help="a study (repeatable; default: all)", repeat=True)
    model: list[str] = opt([], help="a profile (repeatable)", repeat=True)
    only: list[str] | None = opt(None, help="comma-separated variants", split=",")
    sets: list[str] = opt(
        [], help="override a template variable", repeat=True, flag="--set", metavar="KEY=VALUE"
    )
    out: Path = opt(EXPERIMENTS, help="folder to render into")

    def check(self) -> list[str]:
        out = [
            f"{flag}: unknown {noun} {name!r}; one of: {', '.join(known)}"
            for flag, names, known, noun in (
                ("--study", self.study, list_studies(), "study"),
                ("--model", self.model, list_profiles(), "profile"),
            )
            for name in names
            if name not in known
        ]
        if self.sets and Path(self.out).resolve() == EXPERIMENTS.resolve():
            out.append(
                "--set writes configs that differ from the study spec: give --out DIR, not experiments/"
            )
        return out + set_problems(self.sets)


@dataclass
class CheckArgs:
    """exit 1 and name the stale files when experiments/ differs from a fresh render"""

    out: Path = opt(EXPERIMENTS, help="the rendered folder to compare")


@dataclass
class ListArgs:
    """studies, their variants and the profiles"""


@command({"render": RenderArgs, "check": CheckArgs, "list": ListArgs}, __doc__)
def main(a: RenderArgs | CheckArgs | ListArgs) -> int:
    try:
        if isinstance(a, ListArgs):
            for s in list_studies():
                print(f"{s:<11} {' '.join(map(str, load_study(s)['variants']))}")
            for m in list_profiles():
                print(f"profile {m:<13} {load_profile(m)['description']}")
            return 0
        if isinstance(a, CheckArgs):
            stale = check(a.out)
            for s in stale:
                print(f"stale: {s}")
            if stale:
                print(
                    f"{len(stale)} file(s) stale: run `make configs` and commit experiments/", file=sys.stderr
                )
                return 1
            print(f"{a.out.name}/ is up to date")
            return 0
        models = tuple(a.model or COMMITTED_PROFILES)
        for study in a.study or list_studies():  # a bad place refused before LLaMA-Factory is imported
            names = list(map(str, load_study(study)["variants"]))
            for model in models if not set(a.only or ()) - set(names) else ():  # unknown: render says so
                for v in (v for v in variant_names(study, model) if not a.only or v in a.only):
                    check_place(a.out / study / Run(model, study, v).config.name)
        rendered: list[Rendered] = []
        for study in a.study or list_studies():
            for model in models:
                rendered += render_study(study, model, parse_set(a.sets), a.only)
                for v, why in skipped_variants(study, model).items():
                    print(f"skip {model}/{study}/{v}: {why}")
        paths = write_rendered(rendered, a.out, prune=not a.only)
        print(f"rendered {len(paths)} file(s) into {rel(a.out)}/")
        return 0
    except ConfigError as e:
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    run_main(main)
