"""sqlite-utils, imported without pandas or numpy.

sqlite-utils imports pandas and numpy whenever they are installed, only to map
``pandas.Timestamp`` and numpy scalar types to column types when it creates tables from
Python values; framestore creates its tables with SQL (``migrations``) and writes rows
with SQL, never through that mapping. pandas (with pyarrow) costs 0.3 to 1 s of every
start and numpy 0.1 s: the CLI's ``ls`` and ``info`` need neither. So the first import
of sqlite-utils sees each of them that is not loaded yet as missing (a ``None`` entry in
``sys.modules``, the documented way to make an import fail), and the entries are removed
again at once: a later ``import pandas`` or ``import numpy`` works as usual. The storage
process blocks pandas for its whole life (``framestore.write.process._launch``).
"""

from __future__ import annotations

import sys

__all__ = ["sqlite_utils"]

#: Optional imports of sqlite-utils that framestore never needs.
_UNNEEDED = ("pandas", "numpy")


def _import_without_pandas():
    if "sqlite_utils" in sys.modules:
        return sys.modules["sqlite_utils"]
    blocked = [name for name in _UNNEEDED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return sqlite_utils


sqlite_utils = _import_without_pandas()
