"""Encryption at rest: a wrapper that seals every session value before any store sees it.

``SealedStore`` (sync) and ``AsyncSealedStore`` (asyncio) wrap a store's ``execute(op)``.
The values of ``Create``/``Rotate`` (``data``) and ``Update`` (``set``) are sealed with
AES-256-GCM; app key names and ``Meta`` stay plain, so the store still expires sessions,
indexes them by user and lists them. A ``Load`` opens every value; a value that does not open
(a bad tag, a secret no longer configured, truncated bytes, or a value that is not sealed at
all) makes the whole record corrupt: it is deleted, one warning goes to ``session_mw.security``
(never the token, the store key, a name or a value), and the load finds nothing.

Keys: each configured secret gives an AES-256 key by HKDF-SHA256 (a fixed salt and label of our
own); the first secret seals, every one opens. A sealed value is::

    MAGIC (2 bytes) | key id (4 bytes) | nonce (12 random bytes) | ciphertext | GCM tag (16 bytes)

The key id (a hash of the derived key, never of the secret alone) picks the key to try. The
associated data binds the value to its session and field: the header, the store key and the
app key name, so a value copied into another session, or into another field, does not open.
A ``Rotate`` moves a session to a new store key, so its values are sealed anew for that key.

Records written before encryption was enabled hold plain values: they do not open and are
dropped (their users start a new session once). Accepting them would let anyone able to write
to the store inject plain values, which is what sealing is there to stop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..stepping import Plan, run, run_async
from .base import (
    AcquireLock,
    AsyncStore,
    Check,
    Close,
    Collect,
    CorruptRecord,
    Create,
    Delete,
    Load,
    Op,
    R,
    Record,
    ReleaseLock,
    RevokeAll,
    Rotate,
    SessionsOf,
    Store,
    Update,
    WouldBlock,
    tell,
    unsupported,
)

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "encryption at rest (encryption_keys) needs the encryption extra: pip install 'session_mw[encryption]'"
    ) from exc

__all__ = ["MAGIC", "AsyncSealedStore", "SealedStore", "Sealer"]

security_log = logging.getLogger("session_mw.security")

#: The first bytes of every sealed value (0xFE never starts UTF-8 text, so no plain JSON value
#: nor a Flask-tagged one looks sealed), then the format version.
MAGIC = b"\xfe\x01"
_KEY_ID = 4
_NONCE = 12
_TAG = 16
_HEADER = len(MAGIC) + _KEY_ID
_OVERHEAD = _HEADER + _NONCE + _TAG

_SALT = b"session_mw encryption at rest: salt v1"
_INFO = b"session_mw encryption at rest: AES-256-GCM record values v1"
_KEY_ID_LABEL = b"session_mw encryption at rest: key id v1\x00"

#: Operations that carry no value and return none: run by the inner store as they are.
_PLAIN_OPS = (Delete, RevokeAll, SessionsOf, AcquireLock, ReleaseLock, Collect, Check, Close)


class Sealer:
    """The keys of one configuration: seals values for a store key and a name, opens them."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("encryption at rest needs at least one secret")
        self._keys: dict[bytes, list[AESGCM]] = {}
        first: tuple[bytes, AESGCM] | None = None
        seen: set[bytes] = set()
        for secret in secrets:
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(secret.encode())
            if derived in seen:
                continue
            seen.add(derived)
            key_id = hashlib.sha256(_KEY_ID_LABEL + derived).digest()[:_KEY_ID]
            aead = AESGCM(derived)
            self._keys.setdefault(key_id, []).append(aead)  # two ids alike (1 in 2**32): both are tried
            if first is None:
                first = key_id, aead
        assert first is not None
        self._header = MAGIC + first[0]
        self._sealing = first[1]
        self.secrets = len(seen)

    def __repr__(self) -> str:
        return f"Sealer(secrets={self.secrets})"

    def seal(self, store_key: str, name: str, value: bytes) -> bytes:
        return self.seal_all(store_key, {name: value})[name]

    def open(self, store_key: str, name: str, sealed: bytes) -> bytes:
        """The plain value, or ``CorruptRecord`` saying why not (never what it holds)."""
        return self._open(_bound(store_key), name, sealed)

    def seal_all(self, store_key: str, data: Mapping[str, bytes]) -> dict[str, bytes]:
        header, aead, bound, random = self._header, self._sealing, _bound(store_key), os.urandom
        sealed = {}
        for name, value in data.items():
            nonce = random(_NONCE)
            sealed[name] = header + nonce + aead.encrypt(nonce, value, header + bound + name.encode())
        return sealed

    def open_record(self, store_key: str, record: Record) -> Record:
        """``record`` with its values opened, or ``CorruptRecord`` if any one does not open."""
        if not record.data:
            return record
        bound = _bound(store_key)
        return Record({name: self._open(bound, name, value) for name, value in record.data.items()}, record.meta)

    def _open(self, bound: bytes, name: str, sealed: bytes) -> bytes:
        if not sealed.startswith(MAGIC):
            raise CorruptRecord("a session value is not sealed (written before encryption at rest, or forged)")
        if len(sealed) < _OVERHEAD:
            raise CorruptRecord("a sealed session value is truncated")
        header = sealed[:_HEADER]
        candidates = self._keys.get(header[len(MAGIC) :])
        if candidates is None:
            raise CorruptRecord("a session value is sealed with a secret not configured")
        nonce, body, aad = (
            sealed[_HEADER : _HEADER + _NONCE],
            sealed[_HEADER + _NONCE :],
            header + bound + name.encode(),
        )
        for aead in candidates:
            try:
                return aead.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise CorruptRecord("a sealed session value failed authentication")

    def sealed_op(self, op: Op[R]) -> Op[R]:
        """``op`` with its values sealed for the key they are written under; a value-free op as is.

        An operation this module does not know that carries values is refused: it would write
        them in the clear.
        """
        if isinstance(op, (Create, Rotate)):
            return cast(Op[R], dataclasses.replace(op, data=self.seal_all(op.key, op.data)))
        if isinstance(op, Update):
            if not op.set:
                return cast(Op[R], op)
            return cast(Op[R], dataclasses.replace(op, set=self.seal_all(op.key, op.set)))
        if isinstance(op, _PLAIN_OPS) or not _carries_values(op):
            return op
        raise unsupported(self, op)


def _bound(store_key: str) -> bytes:
    """The part of every value's associated data that binds it to its session (after the header,
    before the name): the store key, length-prefixed so that no key and name pair reads as another."""
    key = store_key.encode()
    return struct.pack(">I", len(key)) + key


def _carries_values(op: Op[Any]) -> bool:
    if not dataclasses.is_dataclass(op):
        return False
    return any(f.name in ("data", "set", "values") for f in dataclasses.fields(op))


def _dropped(exc: CorruptRecord) -> None:
    security_log.warning("session record dropped: %s", exc)


def _sealed(sealer: Sealer, op: Op[Any]) -> Plan[Any]:
    """One operation through the seal, as a plan both faces run: values sealed on the way in,
    opened on the way out; a record that does not open is dropped (and reported) as corrupt."""
    if not isinstance(op, Load):
        return (yield sealer.sealed_op(op))
    record = yield op
    if record is None:
        return None
    try:
        return sealer.open_record(op.key, record)
    except CorruptRecord as exc:
        if not op.wait:
            raise WouldBlock from None  # deleting may wait: the caller retries where it can
        _dropped(exc)
        tell(op, "corrupt_record", str(exc))
        yield Delete(op.key, record.meta.user_id)
        return None


class SealedStore:
    """A ``Store`` whose values are sealed at rest; everything else is the inner store's."""

    def __init__(self, inner: Store, secrets: Sequence[str]) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.sealer = Sealer(secrets)

    def __repr__(self) -> str:
        return f"SealedStore({self.inner!r}, secrets={self.sealer.secrets})"

    def execute(self, op: Op[R]) -> R:
        return cast(R, run(_sealed(self.sealer, op), self.inner.execute))


class AsyncSealedStore:
    """The asyncio face of ``SealedStore`` (sealing is CPU work of microseconds: done inline)."""

    def __init__(self, inner: AsyncStore, secrets: Sequence[str]) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.sealer = Sealer(secrets)

    def __repr__(self) -> str:
        return f"AsyncSealedStore({self.inner!r}, secrets={self.sealer.secrets})"

    async def execute(self, op: Op[R]) -> R:
        return cast(R, await run_async(_sealed(self.sealer, op), self.inner.execute))
