"""``python -m session_mw``: the ops CLI (see ``session_mw.cli``)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
