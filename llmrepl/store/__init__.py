"""What llmrepl keeps on disk, and how it reads it back.

``journal`` appends every event, fsynced, one process per journal; ``records`` reads lines
back bounded and checked (and says what a journal keeps of a display item); ``catalogue``
lists and finds stored sessions; ``transcript`` replays one journal into a
``StoredSession``; ``snapshots`` keeps namespace snapshots, pickled by ``pickler``;
``export`` writes Markdown and ``.py``, ``notebook`` the ``.ipynb`` with Jupyter's outputs,
with outside text quoted by ``quoting``; ``fileio`` does private (0700/0600, no symlinks),
atomic writes. It may import ``context`` (llmrepl's note prefix, and where display items go
among a cell's output), ``execution`` (for what counts as a user variable) and the base;
never ``engine`` or ``terminal``.
"""
