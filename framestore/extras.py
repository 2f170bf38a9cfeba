"""Optional dependencies, imported when a feature needs them, with the extra to install
in the error (``MissingExtra``, one line) when they are missing.

| extra | brings | for |
|---|---|---|
| ``ray`` | ``ray[data]``, pyarrow | ``framestore.ray``: ``read_store``, ``record_parallel`` |
| ``s3`` | fsspec, s3fs, pyarrow | ``framestore publish`` and reading published stores |
| ``hf`` | pyarrow, ``datasets`` | ``framestore export --format parquet`` and ``lerobot`` |
| ``rerun`` | ``rerun-sdk`` | ``framestore export --format rrd`` |
| ``minari`` | ``minari``, h5py | ``framestore export --format minari`` |
| ``torch`` | torch | ``framestore.torch``: PyTorch datasets (install ``torch==2.13.0``, the CPU build, first) |
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtra

__all__ = ["require"]


def require(module: str, *, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise ``MissingExtra`` naming ``pip install 'framestore[extra]'``.

    Args:
        module: the module to import (``"pyarrow.parquet"``, ``"ray.data"``...).
        extra: the framestore extra that installs it.
        what: the feature that needs it, for the message (``"publish"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # Only the missing module itself is "not installed"; a broken install re-raises.
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:
            raise
        raise MissingExtra(what, top, extra) from None
