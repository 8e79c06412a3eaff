"""Where cells run: the persistent namespace and everything around one cell.

``executor`` runs a cell and returns an ``ExecResult`` (it never raises),
``interpreter_state`` puts back what a cell broke in the interpreter, ``guards`` what it broke
in the process (fds 0/1/2, timers, signals), ``process`` ends a child the cell forked and
bounds the wait for its threads at exit, ``capture`` records its output as it is shown,
``namespace`` says which names are the user's and reads values safely (a time-bounded
``repr``), ``mpl_backend`` is the matplotlib backend that saves figures, and ``risk`` scans a
cell before it runs. A kernel executor and display data
(Jupyter MIME bundles) belong here too. It may import only the base; never ``model``,
``engine``, ``context``, ``store`` or ``terminal``.
"""
