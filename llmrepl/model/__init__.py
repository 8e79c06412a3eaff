"""The model behind the REPL: any OpenAI-compatible chat endpoint.

``client`` holds the ``ModelClient`` protocol, the ``openai`` SDK adapter (imported lazily)
and the scripted fake; ``retry`` decides which failures are retried and how long to wait (so
the wait is shown, not silent); ``error_map`` turns every SDK or transport failure into one
clear ``ModelError``; ``probe`` looks for a local server; ``pricing`` prices a request. It
may import only the base; never ``engine``, ``context``, ``execution``, ``store`` or
``terminal``.
"""
