"""The demo pool: a few hundred instruction rows built at run time from Python's own documentation.

Nothing is downloaded and no data file is shipped: the rows come from the docstrings of builtins,
of builtin types' methods and of a fixed list of standard-library modules, and from `pydoc`'s
language topics, of the interpreter that runs this. Same interpreter, same rows (sorted names,
no randomness). The text is Python's documentation (PSF License); see data/README.md.

Answers vary in length on purpose (one-line docstrings, module overviews, long topics with code)
so every strategy and every curriculum stage has rows. `score` is a documented heuristic in the
range of HW5's ChatGPT ratings (3.0 to 5.0), see `heuristic_score`.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import re

MODULES = (
    "abc argparse base64 bisect calendar collections contextlib copy csv dataclasses datetime decimal "
    "difflib enum fnmatch fractions functools glob gzip hashlib heapq html io itertools json logging math "
    "operator os.path pathlib pprint queue random re secrets shutil statistics string struct subprocess "
    "tempfile textwrap threading time typing unittest urllib.parse uuid zlib"
).split()
TYPES = (str, list, dict, set, int, float, bytes, tuple)
MAX_WORDS = 400
FUNCS_PER_MODULE = 3


def _clean(doc: str | None) -> str:
    if not doc:
        return ""
    doc = re.sub(r" at 0x[0-9a-fA-F]+", "", inspect.cleandoc(doc))
    return re.sub(r"\n{3,}", "\n\n", doc).strip()


def _cap(text: str, max_words: int = MAX_WORDS) -> str:
    """Cut at a paragraph boundary once past max_words, so long answers stay long but bounded."""
    out, n = [], 0
    for para in text.split("\n\n"):
        out.append(para)
        n += len(para.split())
        if n >= max_words:
            break
    return "\n\n".join(out).strip()


def heuristic_score(instruction: str, answer: str) -> float:
    """3.0 base; +1.0 when the answer has 20 to 300 words (substantial, not rambling), +0.5 when it
    shows an example (`>>>`, code or an indented block), +0.5 when it names what was asked about.
    Rounded to a half point, like HW5's ratings."""
    words = len(answer.split())
    s = 3.0
    s += 1.0 if 20 <= words <= 300 else 0.0
    s += 0.5 if (">>>" in answer or "\n    " in answer or "::" in answer) else 0.0
    names = re.findall(r"`([^`]+)`", instruction)
    s += 0.5 if names and names[0].split(".")[-1].lower() in answer.lower() else 0.0
    return min(5.0, round(s * 2) / 2)


def _rows_builtins() -> list[tuple[str, str, str]]:
    out = []
    for name in sorted(dir(builtins)):
        obj = getattr(builtins, name)
        if name.startswith("_") or isinstance(obj, type) and issubclass(obj, BaseException):
            continue
        doc = _clean(getattr(obj, "__doc__", None))
        if callable(obj) and doc and len(doc.split()) >= 3:
            kind = "class" if isinstance(obj, type) else "built-in function"
            out.append((f"builtin.{name}", f"What does the Python {kind} `{name}` do?", doc))
    return out


def _rows_methods() -> list[tuple[str, str, str]]:
    out = []
    for t in TYPES:
        for name in sorted(vars(t)):
            if name.startswith("_"):
                continue
            doc = _clean(getattr(getattr(t, name), "__doc__", None))
            if doc and len(doc.split()) >= 3:
                out.append(
                    (
                        f"method.{t.__name__}.{name}",
                        f"Explain the `{t.__name__}.{name}` method in Python.",
                        doc,
                    )
                )
    return out


def _rows_modules() -> list[tuple[str, str, str]]:
    out = []
    for mod_name in MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # pragma: no cover - all are standard library
            continue
        doc = _clean(mod.__doc__)
        if doc:
            out.append(
                (f"module.{mod_name}", f"Describe the Python standard-library module `{mod_name}`.", doc)
            )
        public = [n for n in sorted(getattr(mod, "__all__", None) or dir(mod)) if not n.startswith("_")]
        funcs = [
            n for n in public if inspect.isroutine(getattr(mod, n, None)) and _clean(getattr(mod, n).__doc__)
        ]
        for n in funcs[:FUNCS_PER_MODULE]:
            fdoc = _clean(getattr(mod, n).__doc__)
            try:
                sig = f"{n}{inspect.signature(getattr(mod, n))}"
            except (TypeError, ValueError):
                sig = n
            sig = re.sub(r" at 0x[0-9a-fA-F]+", "", sig)  # default values' reprs carry addresses
            out.append(
                (
                    f"func.{mod_name}.{n}",
                    f"How do I use `{mod_name}.{n}` in Python? Show its signature.",
                    f"Signature: {mod_name}.{sig}\n\n{fdoc}",
                )
            )
    return out


def _rows_topics() -> list[tuple[str, str, str]]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - part of the standard library
        return []
    out = []
    for key in sorted(topics):
        text = _clean(topics[key])
        if len(text.split()) >= 10:
            out.append((f"topic.{key}", f"Explain the Python language topic `{key}`, with examples.", text))
    return out


def build() -> list[dict]:
    """Alpaca rows {id, instruction, input, output, score}, deterministic for one interpreter."""
    rows, seen = [], set()
    for rid, instruction, answer in _rows_builtins() + _rows_methods() + _rows_modules() + _rows_topics():
        answer = _cap(answer)
        if instruction in seen or not answer:
            continue
        seen.add(instruction)
        rows.append(
            {
                "id": f"pydoc.{rid}",
                "instruction": instruction,
                "input": "",
                "output": answer,
                "score": heuristic_score(instruction, answer),
            }
        )
    return rows
