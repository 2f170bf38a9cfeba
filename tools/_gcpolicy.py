"""gc's default threshold, in a module of its own so that the CLI can show it in
``--help`` without importing the library (start-up time); ``tools.gc`` re-exports it."""

DEFAULT_THRESHOLD = 0.5  # `framestore gc` rewrites sealed segments less than half live
