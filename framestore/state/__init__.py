"""A store's state that the writer and maintenance share, as functions taking a store:
the one-writer lock, the next ids, the catalogue's segments table reconciled with the
files, segment sizes, deleting segment files (``bookkeeping``), and the merge journal
and placing another store's segments (``merging``).

They take a ``StoreView`` (``view``): the few members of ``FrameStore`` they use, so
this package sits below the write path and the store without importing either.

May import: ``framestore.catalog``, ``framestore.disk`` and the vocabulary modules.
"""
