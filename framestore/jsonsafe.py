"""JSON for numpy values, dataclasses and sets (the encoder the sink stores run config
with, for every ``--json`` output and export sidecar)."""

from telemetry.jsonsafe import dumps, json_default

__all__ = ["dumps", "json_default"]
