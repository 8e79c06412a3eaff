"""What the model is sent: the request, fitted to the model's context window.

``builder`` assembles each request (``Context``), ``prompts`` holds everything said to the
model (a cell's result, its display items in order), ``images`` adds figures as image parts
when ``repl.send_images`` is on, ``budget`` fits the history into the window, ``tokens``
counts tokens (tiktoken, loaded lazily, or an estimate; images by OpenAI's tile rule),
``digest`` picks the namespace's names and fits them to a budget and ``describer`` turns one
value into one line without running user code. It may import ``execution`` (for the
namespace's conventions and ``ExecResult``), ``model.pricing`` and the base; never
``engine`` or ``terminal``.
"""
