"""Segment files on disk: the codecs, writing and sealing segments (``segments``), the one
scanner (``scan``), ``SegmentReader`` (``reader``) and a pass's runs read with it
(``_passes``), frame refs, the store's file lock and
where segment bytes come from (a local directory or ranged remote reads).

May import: the vocabulary modules (``framestore.errors``, ``files``, ``_format``, ...)
and telemetry. Nothing here knows the catalogue, the settings or the write path.
"""
