"""Where a run's files live, from its name: the one place that builds paths.

A run is named `<model>/<study>/<variant>` (for example `smollm2_135m/rank/r8`), after
LLaMA-Factory's own layout. Train, predict, judge, export and report all derive their files
from a `Run`, so they never disagree:

    experiments/<study>/<model>_lora_sft_<variant>.yaml     rendered training config
    saves/<model>/lora/<study>/<variant>/                    adapter, checkpoints, run.json, DONE
    saves/<model>/lora/<study>/<variant>/runs/               TensorBoard events (transformers 5)
    saves/<model>/lora/<study>/<variant>/eval/<testset>/<decoding>/
        predictions.jsonl  metrics.json  judge.jsonl  scores.json
    exports/<model>/<study>/<variant>/                       merged model
    reports/<study>/                                         report.md, index.html, runs.csv, tb/

One epoch of a run is a run name too, `<model>/<study>/<variant>@epoch3`: its adapter is the
checkpoint LLaMA-Factory saved at the end of that epoch (checkpoint-<step>, found through each
checkpoint's trainer_state.json), its evaluations go to `<output_dir>/eval@epoch3/<testset>/<decoding>/`
and its export to `exports/<model>/<study>/<variant>@epoch3/`; run.json, DONE and the events are the
training run's.

Outputs (saves, exports, reports, cache) go under $SMALLDATA_OUT when set, else the repo root;
the registered datasets under $SMALLDATA_DATA when set, else data/.
The base model itself is evaluated as the run `<model>/base/base` (no adapter).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("SMALLDATA_MODELS", ROOT / "models"))
EMBEDDED_MODEL = MODELS / "smollm2-135m-instruct"  # SmolLM2-135M-Instruct, built by make base-model
EXPERIMENTS = ROOT / "experiments"
TEMPLATES = ROOT / "templates"
# LLaMA-Factory's dataset_dir; $SMALLDATA_DATA points it at a copy (tests never touch the user's registry)
DATA = Path(os.environ.get("SMALLDATA_DATA", ROOT / "data"))


def out_root() -> Path:
    """Where generated outputs go: the repo root, or $SMALLDATA_OUT (tests point it at a tmp dir)."""
    return Path(os.environ.get("SMALLDATA_OUT", ROOT))


def saves_dir() -> Path:
    return out_root() / "saves"


def exports_dir() -> Path:
    return out_root() / "exports"


def reports_dir() -> Path:
    return out_root() / "reports"


def cache_dir() -> Path:
    return out_root() / "cache"


BASE_STUDY = "base"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_EPOCH = re.compile(r"^(.*)@epoch(\d+)$")


def _check(part: str, what: str) -> str:
    if not _NAME.match(part):
        raise ValueError(f"bad {what} {part!r}: use letters, digits and _ . + - only")
    return part


@dataclass(frozen=True)
class Run:
    model: str
    study: str
    variant: str
    epoch: int | None = None  # None: the run's final adapter; N: its checkpoint at the end of epoch N

    def __post_init__(self) -> None:
        _check(self.model, "model")
        _check(self.study, "study")
        _check(self.variant, "variant")
        if self.epoch is not None:
            if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 1:
                raise ValueError(f"bad epoch {self.epoch!r}: epochs count from 1")
            if self.study == BASE_STUDY:
                raise ValueError("the base model has no epochs (it is not trained)")

    @classmethod
    def parse(cls, name: str) -> Run:
        """Accept `model/study/variant[@epochN]`, a config path or an output folder."""
        m = _EPOCH.match(str(name))
        if m:
            return cls.parse(m.group(1)).at_epoch(int(m.group(2)))
        p = Path(name)
        if p.suffix in (".yaml", ".yml"):
            study = p.parent.name
            m = re.match(r"^(.+)_lora_sft_(.+)$", p.stem)
            if not m:
                raise ValueError(f"{name}: not named <model>_lora_sft_<variant>.yaml")
            return cls(m.group(1), study, m.group(2))
        parts = [x for x in Path(name).parts if x not in (".",)]
        if "saves" in parts:
            i = parts.index("saves")
            rest = parts[i + 1 :]
            if len(rest) >= 4 and rest[1] == "lora":
                return cls(rest[0], rest[2], rest[3])
        if len(parts) == 3:
            return cls(*parts)
        raise ValueError(f"{name!r}: a run is named <model>/<study>/<variant>, e.g. smollm2_135m/rank/r8")

    @classmethod
    def base(cls, model: str) -> Run:
        return cls(model, BASE_STUDY, BASE_STUDY)

    @property
    def is_base(self) -> bool:
        return self.study == BASE_STUDY

    def at_epoch(self, epoch: int | None) -> Run:
        """The same training run at the end of epoch `epoch` (None: its final adapter)."""
        return Run(self.model, self.study, self.variant, epoch)

    @property
    def trained(self) -> Run:
        """The training run this one belongs to (itself when it names no epoch)."""
        return self.at_epoch(None)

    @property
    def name(self) -> str:
        tail = f"@epoch{self.epoch}" if self.epoch is not None else ""
        return f"{self.model}/{self.study}/{self.variant}{tail}"

    def __str__(self) -> str:
        return self.name

    # -- training -----------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return EXPERIMENTS / self.study / f"{self.model}_lora_sft_{self.variant}.yaml"

    @property
    def output_dir(self) -> Path:
        return study_dir(self.model, self.study) / self.variant

    @property
    def tb_dir(self) -> Path:
        return self.output_dir / "runs"

    @property
    def run_json(self) -> Path:
        return self.output_dir / "run.json"

    @property
    def done_marker(self) -> Path:
        return self.output_dir / "DONE"

    @property
    def log(self) -> Path:
        return self.output_dir / "train.log"

    @property
    def adapter_dir(self) -> Path:
        """The adapter folder: the output folder, or for an epoch the checkpoint saved at its end."""
        if self.epoch is None:
            return self.output_dir
        found = epoch_checkpoints(self.output_dir).get(self.epoch)
        return found if found is not None else self.output_dir / f"checkpoint-of-epoch{self.epoch}-missing"

    @property
    def adapter(self) -> Path:
        return self.adapter_dir / "adapter_model.safetensors"

    @property
    def full_weights(self) -> Path:
        """Where a full-parameter run (full, freeze, GaLore, APOLLO, BAdam) saves its whole model."""
        return self.output_dir / "model.safetensors"

    @property
    def is_full_model(self) -> bool:
        """A run that saved a whole model (config.json + weights) and no adapter."""
        out = self.output_dir
        weights = self.full_weights.exists() or (out / "model.safetensors.index.json").exists()
        return not self.adapter.exists() and weights and (out / "config.json").exists()

    def is_finished(self) -> bool:
        return self.done_marker.exists() and (self.adapter.exists() or self.is_full_model)

    def epochs(self) -> list[Run]:
        """One run per epoch that has a checkpoint, in order (empty when none was kept)."""
        return [self.at_epoch(e) for e in sorted(epoch_checkpoints(self.output_dir))]

    # -- evaluation ---------------------------------------------------------------------------
    @property
    def eval_root(self) -> Path:
        return self.output_dir / ("eval" if self.epoch is None else f"eval@epoch{self.epoch}")

    def eval_dir(self, testset: str, decoding: str) -> Path:
        return self.eval_root / _check(testset, "test set") / _check(decoding, "decoding")

    def predictions(self, testset: str, decoding: str) -> Path:
        return self.eval_dir(testset, decoding) / "predictions.jsonl"

    def metrics(self, testset: str, decoding: str) -> Path:
        return self.eval_dir(testset, decoding) / "metrics.json"

    def judgments(self, testset: str, decoding: str) -> Path:
        return self.eval_dir(testset, decoding) / "judge.jsonl"

    def scores(self, testset: str, decoding: str) -> Path:
        return self.eval_dir(testset, decoding) / "scores.json"

    # -- export -------------------------------------------------------------------------------
    @property
    def export_dir(self) -> Path:
        return exports_dir() / self.model / self.study / self.name.rsplit("/", 1)[1]


def epoch_checkpoints(output_dir: Path) -> dict[int, Path]:
    """{epoch: checkpoint folder}: each complete checkpoint-<step> (trainer_state.json, written last)
    belongs to the epoch its `epoch` value falls in (1.0 -> 1, 1.5 -> 2; a run cut short by max_steps
    ends inside its last epoch); several in one epoch (save_steps) -> the last of them."""
    import json
    import math

    found: dict[int, tuple[int, Path]] = {}
    for p in Path(output_dir).glob("checkpoint-*"):
        step = p.name.split("-", 1)[1]
        state = p / "trainer_state.json"
        if not (p.is_dir() and step.isdigit() and state.exists()):
            continue
        try:
            epoch = float(json.loads(state.read_text()).get("epoch") or 0)
        except (OSError, ValueError, AttributeError):
            continue
        e = max(1, math.ceil(round(epoch, 6)))
        if e not in found or int(step) > found[e][0]:
            found[e] = (int(step), p)
    return {e: p for e, (_, p) in sorted(found.items())}


def report_dir(study: str) -> Path:
    return reports_dir() / _check(study, "study")


def study_dir(model: str, study: str) -> Path:
    """The folder holding a study's runs for one model (saves/<model>/lora/<study>/)."""
    return saves_dir() / _check(model, "model") / "lora" / _check(study, "study")


def runs_of_study(
    study: str, model: str | None = None, with_base: bool = False, finished: bool = False
) -> list[Run]:
    """Every run with an output folder for a study (any model unless one is named), sorted; hidden folders
    (`.<variant>.stale-*`, set aside by the sweep) are not runs. `finished`: only runs with their DONE
    marker and adapter. `with_base`: then each shown model's base run, where it has an output folder."""
    saves = saves_dir()
    models = (
        [model] if model else sorted(d.name for d in saves.glob("*") if d.is_dir()) if saves.exists() else []
    )
    runs = [
        Run(m, study, v.name)
        for m in models
        for v in sorted(study_dir(m, study).glob("*"))
        if v.is_dir() and not v.name.startswith(".")
    ]
    runs = [r for r in runs if r.is_finished() or not finished]
    if with_base and study != BASE_STUDY:
        shown = sorted({r.model for r in runs} | ({model} if model else set()))
        runs += [Run.base(m) for m in shown if Run.base(m).output_dir.is_dir()]
    return runs


def venv_bin(name: str) -> list[str]:
    """The command that runs a console script of the running interpreter's environment (no need to activate
    .venv). The script is handed to that interpreter rather than executed: a venv that was copied or moved
    keeps its scripts' old `#!` lines, and exec'ing one of those fails with a misleading "No such file"."""
    import shutil
    import sys

    here = Path(sys.executable).parent / name
    if here.exists():
        return [sys.executable, str(here)]
    return [shutil.which(name) or name]


def llamafactory_cli() -> list[str]:
    return venv_bin("llamafactory-cli")
