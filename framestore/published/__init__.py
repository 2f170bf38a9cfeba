"""Reading a published store (``_reading``): a directory or an fsspec URL holding sealed
segments, the catalogue as Parquet and a manifest; the manifest checked, the catalogue
loaded into a scratch SQLite database. Publishing one is ``framestore.maintenance.publish``.

May import: ``framestore.catalog``, ``framestore.disk`` and the vocabulary modules.
"""
