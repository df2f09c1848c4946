"""Value encodings. JSON only (never pickle): a store dump must not be able to run code.

Every session value is stored in one canonical encoding, whichever encoder runs::

    json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")

and nested at most ``MAX_DEPTH`` containers deep. Accepted, therefore, are what the standard
library's json takes: dict, list, tuple, str, int, float, bool, None and their subclasses, with
str, int, float, bool or None keys (written as JSON strings); refused, with ``ValueNotStorable``,
are every other type, NaN and infinities, lone surrogates, circular or too deep containers.

orjson, where installed, only makes this faster: it runs on a value only when it is known to
write these same bytes, and everything else goes to the standard library, which decides. So a
store written with orjson reads the same without it, and the other way round.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ValueNotDecodable, ValueNotStorable

MAX_DEPTH = 64
"""Arrays and objects nested in one stored value, at most. Deeper data is refused both ways, so
no stored value can drive an encoder or decoder into RecursionError."""

TAGGED_PREFIX = b"\x00f"
"""Starts a value the Flask door stored in Flask's tagged JSON. No JSON text can begin with a NUL
byte, so a plain value is never taken for a tagged one."""


class Serializer(Protocol):
    """Turns one session value into bytes and back.

    ``dumps`` raises ``ValueNotStorable`` for a value it cannot encode; ``loads`` raises
    ``ValueNotDecodable`` for bytes it cannot read back.
    """

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        raise ValueNotStorable(f"a {type(o).__name__} cannot be stored: JSON has no such type")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueNotDecodable("stored value holds a number too large for a float")
    return number


def _no_constants(name: str) -> Any:
    raise ValueNotDecodable(f"stored value holds {name}, which JSON does not allow")


_ENCODER = _Encoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constants)

_SQUARE = bytes.maketrans(b"{}", b"[]")  # only how deep, not which kind, matters
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_TOO_MANY_OPEN = b"[" * (MAX_DEPTH + 1)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

_TOO_DEEP = f"nested deeper than {MAX_DEPTH} lists and dicts"


def _within_depth(text: bytes) -> bool:
    """Whether JSON ``text`` nests at most ``MAX_DEPTH`` arrays and objects (in C-speed passes)."""
    if len(text) <= 2 * MAX_DEPTH or text.count(b"[") + text.count(b"{") <= MAX_DEPTH:
        return True  # too few brackets to be too deep, wherever they stand
    if b"\\" in text:  # without escaped backslashes, then escaped quotes, every quote delimits a string
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Brackets and quotes only; dropping two adjacent quotes moves nothing in or out of a string.
    skeleton = text.translate(_SQUARE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:  # some strings hold brackets: keep what lies between strings
        skeleton = b"".join(skeleton.split(b'"')[::2])
    if _TOO_MANY_OPEN in skeleton:
        return False
    for _ in range(MAX_DEPTH):
        skeleton = skeleton.replace(b"[]", b"")  # one level per pass: each innermost pair
        if not skeleton:
            return True
    return False


def _why_not(exc: Exception) -> str:
    """A message for an encoder error that names the problem but shows nothing of the value."""
    if isinstance(exc, UnicodeError):
        return "a str holds a lone surrogate, which UTF-8 cannot encode"
    text = str(exc)
    if text.startswith("keys must be"):
        return f"a dict key cannot be stored: {text}"  # the stdlib names only the key's type
    if text.startswith("Out of range float"):
        return "NaN and infinity cannot be stored: JSON has no such numbers"
    if text.startswith("Circular reference"):
        return "a list or dict contains itself"
    if text.startswith("Exceeds the limit"):
        return "an int has too many digits to convert to text"
    return f"the value cannot be stored as JSON ({type(exc).__name__})"


class JSONSerializer:
    """The canonical encoding, standard library only: the reference every other path must match."""

    def dumps(self, value: Any) -> bytes:
        try:
            out = _ENCODER.encode(value).encode("utf-8")
        except ValueNotStorable:
            raise
        except RecursionError:
            raise ValueNotStorable(_TOO_DEEP) from None
        except (TypeError, ValueError) as exc:
            raise ValueNotStorable(_why_not(exc)) from None
        if not _within_depth(out):
            raise ValueNotStorable(_TOO_DEEP)
        return out

    def loads(self, data: bytes) -> Any:
        """The value, also of a Flask-tagged value: then the tagged structure, as plain data."""
        if data.startswith(TAGGED_PREFIX):
            data = data[len(TAGGED_PREFIX) :]
        if not _within_depth(data):
            raise ValueNotDecodable(f"stored value is {_TOO_DEEP}")
        try:
            value = _DECODER.decode(data.decode("utf-8"))
        except ValueNotDecodable:
            raise
        except UnicodeError:
            raise ValueNotDecodable("stored value is not valid UTF-8") from None
        except json.JSONDecodeError as exc:
            raise ValueNotDecodable(f"stored value is not JSON: {exc.msg} (position {exc.pos})") from None
        except RecursionError:  # only when the caller's stack was already deep
            raise ValueNotDecodable(f"stored value is {_TOO_DEEP}") from None
        except ValueError as exc:
            if str(exc).startswith("Exceeds the limit"):
                raise ValueNotDecodable("stored value holds an int with too many digits") from None
            raise ValueNotDecodable(f"stored value cannot be read ({type(exc).__name__})") from None
        if _SURROGATE_ESCAPE.search(data) is not None:
            try:
                _ENCODER.encode(value).encode("utf-8")
            except UnicodeError:
                raise ValueNotDecodable("stored value holds a lone surrogate") from None
        return value


_SCALARS = frozenset({str, int, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19  # a shorter int fits orjson's 64 bits (a regex search is 15x slower)


def _float_exact(number: float) -> bool:
    """Whether orjson prints ``number`` as ``repr`` does: both print the shortest round-trip digits,
    but differ in exponent notation, which repr uses outside [1e-4, 1e16). NaN and inf fail too."""
    return number == 0.0 or 1e-4 <= abs(number) < 1e16


def _orjson_exact(container: Any, room: int) -> bool:
    """Whether orjson writes ``container`` (an exact dict, list or tuple) byte for byte as the stdlib.

    Exact builtin types only, since orjson writes UUIDs, Enums and NaN that the standard library
    refuses, and at most ``room`` levels deep. Keys are left to orjson: without OPT_NON_STR_KEYS
    it refuses every key that is not an exact str.
    """
    if room == 0:
        return False
    room -= 1
    for item in container.values() if type(container) is dict else container:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is float:
            if not _float_exact(item):
                return False
        elif kind in _CONTAINERS:
            if not _orjson_exact(item, room):
                return False
        else:
            return False
    return True


def _refuse(value: Any) -> Any:
    raise TypeError("left to the standard library")


class FastJSONSerializer(JSONSerializer):
    """The canonical encoding, sped up by orjson where it provably writes and reads the same.

    Raises ImportError without orjson. Everything orjson is not known to handle exactly as the
    standard library does goes to ``JSONSerializer``, errors included, so both give the same
    bytes, values and errors for every input.
    """

    def __init__(self) -> None:
        import orjson

        self._dumps: Callable[..., bytes] = orjson.dumps
        self._loads: Callable[[bytes], Any] = orjson.loads
        self._decode_error: type[Exception] = orjson.JSONDecodeError
        # Belt and braces: the type check already keeps these away from orjson.
        self._options = (
            orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
        )

    def dumps(self, value: Any) -> bytes:
        kind = type(value)
        if (
            kind in _SCALARS
            or (kind is float and _float_exact(value))
            or (kind in _CONTAINERS and _orjson_exact(value, MAX_DEPTH))
        ):
            try:
                return self._dumps(value, option=self._options, default=_refuse)
            except TypeError:  # an int past 64 bits, a lone surrogate, a key that is not an exact str
                pass
        return super().dumps(value)

    def loads(self, data: bytes) -> Any:
        body = data[len(TAGGED_PREFIX) :] if data.startswith(TAGGED_PREFIX) else data
        # orjson reads ints past 64 bits as floats: those need 19 digits in a row, so short text has none
        if len(body) < len(_LONG_RUN) or _LONG_RUN not in body.translate(_DIGITS_AS_ZERO):
            try:
                value = self._loads(body)
            except self._decode_error:
                pass  # the standard library decides, and names the error
            else:
                if _within_depth(body):
                    return value
        return super().loads(data)


OrjsonSerializer = FastJSONSerializer
"""The old name."""


def default_serializer() -> JSONSerializer:
    """``FastJSONSerializer`` where orjson imports, else ``JSONSerializer``: the same bytes either way."""
    try:
        return FastJSONSerializer()
    except ImportError:
        return JSONSerializer()
