"""sqlite-utils, imported without pandas.

sqlite-utils imports pandas whenever it is installed, only to map ``pandas.Timestamp``
to TEXT when it creates tables from Python values; framestore never gives it pandas
objects, and pandas (with pyarrow) costs 0.3 to 1 s of every start: the CLI's ``ls``,
``info`` and every program that opens a store. So the first import of sqlite-utils
sees pandas as missing (a ``None`` entry in ``sys.modules``, the documented way to make
an import fail), and the entry is removed again at once: a later ``import pandas``
works as usual. The storage process does the same for its whole life
(``framestore._storagelaunch``).
"""

from __future__ import annotations

import sys

__all__ = ["sqlite_utils"]


def _import_without_pandas():
    blocked = "pandas" not in sys.modules and "sqlite_utils" not in sys.modules
    if blocked:
        sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
    finally:
        if blocked and "pandas" in sys.modules and sys.modules["pandas"] is None:
            del sys.modules["pandas"]
    return sqlite_utils


sqlite_utils = _import_without_pandas()
