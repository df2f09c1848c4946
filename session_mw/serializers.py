"""Value encodings. JSON only (never pickle): a store dump must not be able to run code."""

from __future__ import annotations

import json
from typing import Any, Protocol


class Serializer(Protocol):
    """Turns one session value into bytes and back.

    :param value: any value the app stores under one session key.
    """

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """Standard-library JSON, compact."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class OrjsonSerializer:
    """orjson where installed: several times faster, same JSON on the wire."""

    def __init__(self) -> None:
        import orjson

        self._orjson = orjson
        self._options = orjson.OPT_NON_STR_KEYS

    def dumps(self, value: Any) -> bytes:
        return self._orjson.dumps(value, option=self._options)

    def loads(self, data: bytes) -> Any:
        return self._orjson.loads(data)


def default_serializer() -> Serializer:
    try:
        return OrjsonSerializer()
    except ImportError:
        return JSONSerializer()
