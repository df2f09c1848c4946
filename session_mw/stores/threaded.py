"""The async face of a sync store, without a second implementation.

Fast in-process stores run inline; stores that block (SQLite) run in a worker thread, except
loads and the short writes, which run inline when the store can promise not to wait
(``INLINE_LOADS``, ``INLINE_WRITES``).
"""

from __future__ import annotations

import dataclasses
from typing import cast

from .base import INLINE_LOADS, INLINE_WRITES, INLINE_WRITES_OPS, InlineWriter, Load, Op, R, Store, WouldBlock


class AsyncFromSync:
    """``AsyncStore`` over a ``Store``; ``offload=True`` runs each call in a thread (anyio)."""

    def __init__(self, store: Store, *, offload: bool) -> None:
        if offload:
            try:
                import anyio.to_thread  # noqa: F401  (here, so a missing one fails at start-up, not per request)
            except ImportError as exc:
                raise ImportError(
                    f"the ASGI door runs {type(store).__name__} in worker threads with anyio: "
                    "pip install 'session_mw[fastapi]' (or just anyio)"
                ) from exc
        self.sync = store
        self.capabilities = store.capabilities
        self._offload = offload
        self._inline_loads = INLINE_LOADS in store.capabilities
        #: the store itself when it runs short writes without waiting (``INLINE_WRITES``)
        self._inline_writer = store if INLINE_WRITES in store.capabilities and isinstance(store, InlineWriter) else None

    def __repr__(self) -> str:
        return f"AsyncFromSync({self.sync!r})"

    async def execute(self, op: Op[R]) -> R:
        if not self._offload:
            return self.sync.execute(op)
        if self._inline_loads and isinstance(op, Load) and op.wait:
            try:
                return cast(R, self.sync.execute(dataclasses.replace(op, wait=False)))
            except WouldBlock:
                pass
        elif self._inline_writer is not None and type(op) in INLINE_WRITES_OPS:
            try:
                return self._inline_writer.execute_now(op)
            except WouldBlock:
                pass
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.sync.execute, op)
