"""Names a package exports on first use (PEP 562), so importing the package stays cheap:
``framestore`` and ``telemetry`` each name their public classes here instead of importing
every module at start-up (``framestore --help`` imports no numpy, gymnasium or sqlite-utils).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, sources: Mapping[str, str], names: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: a name in ``sources``
    (``{name: relative module}``) is imported from its module when first asked for and
    kept in the package, so later lookups do not come here; ``names`` (``__all__``) are
    listed by ``dir()`` before they are loaded."""
    listed = set(names)

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # once
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | listed)

    return __getattr__, __dir__
