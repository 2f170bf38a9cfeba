"""Numbers as the GUI shows them: the CLI's helpers (``tools.text``)."""

from tools.text import format_number, human_bytes

__all__ = ["format_number", "human_bytes"]
