"""The terminal front end: everything that reads keys and writes to the terminal.

``startup`` starts a front end (the early prompt drawn before prompt_toolkit loads, the
background warm-up, batch mode); ``interactive`` is the prompt_toolkit loop (prompt, toolbar,
history); ``gate`` asks the review question (one key, a pager for a cell taller than the
screen); ``plain`` is the line-based loop for ``TERM=dumb``; ``display`` turns the engine's
``Display`` calls into text (``Out[N]:``, the status line, display items), ``markdown`` and
``inline`` render answers as streamed Markdown, ``spinner`` shows waits, ``images`` draws
images inline (kitty, iTerm2, sixel), ``render`` highlights code and ``sanitize`` is the one
gate every byte from outside passes on its way to the terminal. This is the only place that
may print, and the only one that loads prompt_toolkit or pygments. It may import every other
layer; nothing outside it (``cli`` and ``app`` aside) imports it.
"""
