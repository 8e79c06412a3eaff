"""Where cells run: the persistent namespace and everything around one cell.

``executor`` runs a cell and returns an ``ExecResult`` (it never raises),
``interpreter_state`` puts back what a cell broke in the interpreter, ``guards`` what it broke
in the process (fds 0/1/2, timers, signals), ``process`` ends a child the cell forked and
bounds the wait for its threads at exit, ``capture`` records its output as it is shown and
``fdcapture`` adds what reaches fds 1 and 2 (programs, C code), ``namespace`` says which
names are the user's and reads values safely (a time-bounded ``repr``), and ``risk`` scans a
cell before it runs. Rich outputs follow Jupyter's model: ``outputs`` holds ``DisplayData``
(MIME bundles), ``display()`` and the rich-repr protocol, ``publisher`` saves display items
and sends them live, ``tables`` formats pandas objects for the model and the screen,
``figures`` renders, describes and closes matplotlib figures, and ``mpl_backend`` is the
inline matplotlib backend (``plt.show()`` and the end of every cell draw each open figure).
A kernel executor belongs here too. It may import only the base; never ``model``,
``engine``, ``context``, ``store`` or ``terminal``.
"""
