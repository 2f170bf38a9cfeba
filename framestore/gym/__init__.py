"""Gymnasium integration: ``RecordFrames`` (``wrappers``), ``RecordVectorFrames``
(``vector``) and the one play loop of ``record``, ``record_parallel`` and the benchmarks
(``play``).

May import: ``framestore.write`` and what it may import, and ``framestore.store``.
"""
