"""A package's public face, loaded lazily: `from tools.eval import Engine` imports only what it needs.

Each stage package lists its public names and the module that defines each. Names resolve on first
use (PEP 562), so importing a package costs nothing until a name is used, and `python -m
tools.<stage>.<module>` never finds its own module half-imported by the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_face(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """(`__getattr__`, `__all__`) for a package whose public names live in its modules.

    `names` maps a public name to the module (relative to the package) that defines it, or to
    `module:attr` where the module calls it something else (`"study_main": "study:main"`).
    """

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = module.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attr or name)

    __getattr__.names = dict(names)  # read by the layout test: which module defines each name
    return __getattr__, sorted(names)
