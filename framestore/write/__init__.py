"""The write path: the ``Recorder`` (``recorder``) and ``LiteRecorder`` (``lite``), a
batch's rows, named streams and observations, open chunks and the queue budget on the
producer side, ``FrameStorageService`` and its writer thread's ``ChunkWriter``
(``service``, ``_chunks``), and the ``Storage`` placements: threads in this process
(``_storage``) or a storage process (``process/``).

May import: ``framestore.state``, ``framestore.settings``, ``framestore.catalog``,
``framestore.disk``, the vocabulary modules and telemetry; never ``framestore.store``
(a recorder gets its store as a ``framestore.state.view.StoreView``).
"""
