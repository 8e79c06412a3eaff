"""``python -m llmrepl`` is the ``llmrepl`` command."""

from __future__ import annotations

import sys

from llmrepl.cli import main

if __name__ == "__main__":
    sys.exit(main())
