"""Maintenance that works through an open ``FrameStore``: compaction (``compaction``:
gc and recover copy live chunks, repoint, delete) and publishing a store (``publish``).
The tools' ``gc``, ``recover``, ``merge`` and ``publish`` verbs call them.

May import: ``framestore.store`` and everything below it.
"""
