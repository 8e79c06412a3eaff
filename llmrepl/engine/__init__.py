"""The engine: the conversation and the run/feed-back loop, with no terminal in it.

``session`` holds ``Session`` (one message in, a ``TurnResult`` out: the conversation, the
cells, /undo and snapshots), ``turn`` the model loop one message runs, ``commands`` the
slash-command registry, ``resume`` turns a stored session back into a live one, and
``protocols`` defines what a front end implements (``Reviewer``, ``Display``) with the
headless implementations beside them. It may import ``context``, ``execution``, ``model``,
``store`` and the base; it never imports ``terminal``, prompt_toolkit or pygments, and never
prints.
"""
