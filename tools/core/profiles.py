"""Model profiles (`templates/profiles/<model>.yaml`) and model references, read the same way by every stage.

A profile names the base model, its chat template and the training values the train template takes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tools.core.paths import MODELS, ROOT, TEMPLATES, saves_dir

PROFILES = TEMPLATES / "profiles"
PROFILE_REQUIRED = ("description", "model_name_or_path", "template")


class ConfigError(ValueError):
    """Bad profile, study spec or rendered config; the message names the file and the key."""


def rel(path: Path) -> str:
    """A path as the user would type it from the repo root, when it lies inside the repo."""
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently, so a study spec with `learning_rate` twice would train on a value nobody meant)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first}, again at line "
                    f"{key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: Path, text: str | None = None):
    """A YAML file (or its text) parsed strictly: unreadable bytes, bad YAML and duplicate keys all
    raise ConfigError naming the file and the line. Every spec, profile and protocol goes through here."""
    try:
        text = Path(path).read_text(encoding="utf-8") if text is None else text
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None


def read_yaml(path: Path, what: str) -> dict:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys to values")
    return data


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def load_profile(model: str) -> dict:
    """A model profile as a dict (model_name_or_path, template, description, training values)."""
    path = PROFILES / f"{model}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown profile {model!r}: no {rel(path)} (have: {', '.join(list_profiles())})")
    prof = read_yaml(path, "profile")
    for key in PROFILE_REQUIRED:
        if key not in prof:
            raise ConfigError(f"{path}: missing required key {key!r}")
    return prof


def resolve_model_path(model_name_or_path: str) -> str:
    """A profile's model: a folder relative to the repo root when it is one, else a hub id as given."""
    if model_name_or_path.startswith("models/"):  # honours SMALLDATA_MODELS, as tools.core.paths does
        return str(MODELS / model_name_or_path.removeprefix("models/"))
    if model_name_or_path.startswith("saves/"):  # a model this project wrote (a pruned one): the output root
        return str(saves_dir() / model_name_or_path.removeprefix("saves/"))
    local = ROOT / model_name_or_path
    if local.exists() or model_name_or_path.startswith("./"):
        return str(local)
    return model_name_or_path


def local_model(p: str | Path) -> Path | None:
    """A model reference as a local folder when it is one (relative paths are relative to the repo root)."""
    p = Path(p)
    for cand in (p, ROOT / p) if not p.is_absolute() else (p,):
        if cand.exists():
            return cand.resolve()
    return None


def same_model(a: str | Path, b: str | Path) -> bool:
    """Two references to one base model: same folder when both are local, else same final name(s)."""
    la, lb = local_model(a), local_model(b)
    if la and lb:
        return la == lb
    pa, pb = Path(str(a).rstrip("/")).parts, Path(str(b).rstrip("/")).parts
    n = min(len(pa), len(pb), 2)  # hub ids are 'org/name'; a moved checkout keeps the folder name
    return pa[-n:] == pb[-n:]
