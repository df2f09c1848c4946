"""The async face of a sync store, without a second implementation.

Fast in-process stores run inline; stores that block (SQLite) run in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .base import Meta, Record, Store, Touch, Write

_R = TypeVar("_R")


class AsyncFromSync:
    """``AsyncStore`` over a ``Store``; ``offload=True`` runs each call in a thread (anyio)."""

    def __init__(self, store: Store, *, offload: bool) -> None:
        self.sync = store
        self._offload = offload

    def __repr__(self) -> str:
        return f"AsyncFromSync({self.sync!r})"

    async def _call(self, fn: Callable[..., _R], *args: Any) -> _R:
        if not self._offload:
            return fn(*args)
        import anyio.to_thread

        return await anyio.to_thread.run_sync(fn, *args)

    async def load(self, key: str, touch: Touch) -> Record | None:
        nowait = getattr(self.sync, "load_without_waiting", None)
        if nowait is not None:  # SQLite: inline unless it would block, which is rare under WAL
            from .sqlite import WouldBlock

            try:
                record: Record | None = nowait(key, touch)
                return record
            except WouldBlock:
                pass
        return await self._call(self.sync.load, key, touch)

    async def write(self, op: Write) -> bool:
        return await self._call(self.sync.write, op)

    async def delete(self, key: str) -> None:
        await self._call(self.sync.delete, key)

    async def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]:
        return await self._call(self.sync.user_sessions, user_id)

    async def gc(self, now: float) -> int:
        return await self._call(self.sync.gc, now)

    async def acquire_lock(self, key: str, owner: str, lease: float) -> bool:
        acquire: Callable[[str, str, float], bool] = self.sync.acquire_lock  # type: ignore[attr-defined]
        return await self._call(acquire, key, owner, lease)

    async def release_lock(self, key: str, owner: str) -> None:
        release: Callable[[str, str], None] = self.sync.release_lock  # type: ignore[attr-defined]
        await self._call(release, key, owner)

    async def close(self) -> None:
        await self._call(self.sync.close)
