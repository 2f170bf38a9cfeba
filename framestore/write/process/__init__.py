"""The storage-process placement (``writer="process"``): producer side ``ProcessStorage``
(``_client``), the link to the process (``_link``) and starting it (``_launch``), the
process's own side (``_main``: a ``ThreadStorage`` fed from the ring), the commands and
replies (``_wire``) and the shared memory (``_ring``).

May import: the rest of ``framestore.write`` and what it may import.
"""
