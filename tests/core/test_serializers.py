"""The canonical value encoding: the orjson path must be indistinguishable from the stdlib path."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import sys
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_mw.errors import SessionError, ValueNotDecodable, ValueNotStorable
from session_mw.serializers import (
    MAX_DEPTH,
    TAGGED_PREFIX,
    FastJSONSerializer,
    JSONSerializer,
    default_serializer,
)

STD = JSONSerializer()
try:
    FAST: JSONSerializer | None = FastJSONSerializer()
except ImportError:  # pragma: no cover - orjson is a dev dependency
    FAST = None
needs_orjson = pytest.mark.skipif(FAST is None, reason="orjson is not installed")
SERIALIZERS = [STD] if FAST is None else [STD, FAST]
REFUSED = "refused"


def fast() -> JSONSerializer:
    assert FAST is not None
    return FAST


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    LOW = 1


class Name(str):
    pass


class Ratio(float):
    pass


class Items(list[Any]):
    pass


@dataclasses.dataclass
class Point:
    x: int
    y: int


Pair = collections.namedtuple("Pair", "a b")


def canonical(value: Any) -> bytes | str:
    """The definition: stdlib json, compact, no NaN, UTF-8; and at most MAX_DEPTH deep."""
    try:
        out = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return REFUSED
    return out if depth(json.loads(out)) <= MAX_DEPTH else REFUSED


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down: 1 is not 1.0 or True, -0.0 is not 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def dumped(serializer: JSONSerializer, value: Any) -> bytes | str:
    try:
        return serializer.dumps(value)
    except ValueNotStorable:
        return REFUSED


def loaded(serializer: JSONSerializer, data: bytes) -> Any:
    try:
        return serializer.loads(data)
    except ValueNotDecodable:
        return REFUSED


def nest(value: Any, levels: int, siblings: bool = False) -> Any:
    """``value`` inside ``levels`` lists and dicts; with ``siblings``, no long run of opening brackets."""
    for i in range(levels):
        if siblings and i:  # (an empty sibling of the leaf would be one level deeper)
            value = [[], value] if i % 2 else {"a": {}, "k": value}
        else:
            value = [value] if i % 2 else {"k": value}
    return value


def circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


tricky = st.sampled_from(['"', "\\", '\\"', '"[', ']"', '\\"[{', "[[[[", "}}]]", '"' + "[" * 70])
texts = (  # surrogates and control chars too; quotes, backslashes and brackets to confuse the depth check
    st.text(st.characters(exclude_categories=()), max_size=8) | tricky | st.lists(tricky, max_size=4).map("".join)
)
floats = st.floats() | st.sampled_from(
    [1e16, 9999999999999998.0, 1e-4, 9.999999999999999e-05, 1e-5, 5e-324, 1.7976931348623157e308, -0.0, 1e22]
)
ints = (
    st.integers()
    | st.integers(2**63 - 3, 2**64 + 3)
    | st.integers(-(2**63) - 3, -(2**63) + 3)
    | st.sampled_from([30, -4299, 4300]).map(lambda n: 10 ** abs(n) * (-1 if n < 0 else 1))  # 4301 digits: too many
)
odd: st.SearchStrategy[Any] = (
    st.datetimes()
    | st.dates()
    | st.uuids()
    | st.sampled_from([Color.RED, Level.LOW])
    | texts.map(Name)
    | floats.map(Ratio)
    | st.builds(Point, st.integers(), st.integers())
    | st.builds(Pair, st.integers(), texts)
    | st.binary(max_size=4)
    | st.sets(st.integers(), max_size=2)
    | st.decimals(allow_nan=False, places=2)
    | st.builds(circular)
)
if FAST is not None:
    import orjson

    odd = odd | st.just(orjson.Fragment(b"[1]"))
keys = texts | st.integers() | floats | st.booleans() | st.none() | st.just(Level.LOW) | texts.map(Name) | st.just((1,))
leaves = st.none() | st.booleans() | ints | floats | texts | odd


def containers(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(kids, max_size=4)
        | st.lists(kids, max_size=3).map(tuple)
        | st.lists(kids, max_size=3).map(Items)
        | st.dictionaries(texts, kids, max_size=4)
        | st.dictionaries(keys, kids, max_size=3)
        | st.dictionaries(texts, kids, max_size=3).map(collections.OrderedDict)
    )


values = st.recursive(leaves, containers, max_leaves=12)
deep_values = st.builds(nest, values, st.integers(MAX_DEPTH - 4, MAX_DEPTH + 4), st.booleans())


@needs_orjson
@settings(deadline=None, max_examples=600, database=None)
@given(values | deep_values)
def test_fast_and_stdlib_write_the_same_bytes_or_both_refuse(value: Any) -> None:
    out = dumped(STD, value)
    assert dumped(fast(), value) == out
    assert out == canonical(value)
    if isinstance(out, bytes):
        back = STD.loads(out)
        assert same(fast().loads(out), back)
        assert same(back, json.loads(out))


def as_json_text(value: Any, ascii: bool, indent: int | None) -> bytes:
    """Some JSON text for ``value``, not canonical: NaN, escapes, whitespace, invalid UTF-8."""
    try:
        text = json.dumps(value, ensure_ascii=ascii, indent=indent, default=repr)
    except (TypeError, ValueError):  # a tuple key, a circular list
        return b"[]"
    return text.encode("utf-8", "surrogatepass")


tokens = st.sampled_from(
    [
        b"NaN",
        b"-Infinity",
        b"Infinity",
        b"1e400",
        b"-1e999",
        b"1e-400",
        b"18446744073709551615",
        b"18446744073709551616",
        b"-9223372036854775809",
        b"123456789012345678901234567890",
        b"0.12345678901234567890123",
        b"1" * 4301,
        b"-0",
        b"-0.0",
        b"1E5",
        b"1.5e-7",
        b'"\\ud800"',
        b'"\\udc00"',
        b'"\\ud83d\\ude00"',
        b'"\\ud800\\u0041"',
        b'"\\\\ud800"',
        b'"\xed\xa0\x80"',
        b'"\xff"',
        b'"\t"',
        b'"\\u0000"',
        b'"[{\\""',
        b"\xef\xbb\xbf1",
        b"true",
        b"nul",
        b"{}",
        b'{"a":1,"a":2}',
        b"[1,]",
        b" ",
    ]
)
token_texts = st.lists(tokens, max_size=4).map(lambda parts: b"[" + b",".join(parts) + b"]") | tokens
nestings = st.builds(
    lambda n, opener, closer: opener * n + b"1" + closer * n,
    st.integers(1, MAX_DEPTH + 3) | st.sampled_from([1023, 1024, 1025, 20_000]),
    st.sampled_from([b"[", b'{"a":']),
    st.sampled_from([b"]", b"}"]),
)


def mutate(data: bytes, at: int, byte: int, how: int) -> bytes:
    at %= len(data) + 1
    if how == 0:
        return data[:at] + bytes([byte]) + data[at:]
    if how == 1:
        return data[:at] + data[at + 1 :]
    return data[:at] + bytes([byte]) + data[at + 1 :]


texts_of_values = st.builds(as_json_text, values | deep_values, st.booleans(), st.sampled_from([None, 0, 2]))
byte_strings = (
    st.builds(canonical, values).filter(lambda b: isinstance(b, bytes))
    | texts_of_values
    | token_texts
    | nestings
    | st.binary(max_size=12)
    | st.builds(mutate, texts_of_values, st.integers(0, 50), st.integers(0, 255), st.integers(0, 2))
)


@needs_orjson
@settings(deadline=None, max_examples=600, database=None)
@given(byte_strings, st.booleans())
def test_fast_and_stdlib_read_the_same_values_or_both_refuse(data: bytes, marked: bool) -> None:
    if marked:
        data = TAGGED_PREFIX + data
    value = loaded(STD, data)
    assert same(loaded(fast(), data), value)
    if value is not REFUSED:
        body = data.removeprefix(TAGGED_PREFIX)
        assert same(value, json.loads(body.decode("utf-8")))
        assert isinstance(STD.dumps(value), bytes)  # whatever is read can be written back


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        [float("inf")],
        {"when": datetime.datetime(2024, 1, 1)},
        uuid.UUID(int=1),
        Color.RED,
        b"bytes",
        {1, 2},
        decimal.Decimal("1.5"),
        Point(1, 2),
        "lone \ud800",
        {(1, 2): "tuple key"},
        10**5000,
        circular(),
        nest(None, MAX_DEPTH + 1),
        nest(None, 100_000),
    ],
    ids=lambda v: type(v).__name__,
)
def test_what_cannot_be_stored_is_refused_by_name(serializer: JSONSerializer, value: Any) -> None:
    with pytest.raises(ValueNotStorable) as caught:
        serializer.dumps(value)
    assert isinstance(caught.value, SessionError) and isinstance(caught.value, TypeError)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_messages_name_the_type_never_the_value(serializer: JSONSerializer) -> None:
    with pytest.raises(ValueNotStorable, match="UUID") as caught:
        serializer.dumps({"password": "hunter2", "token": uuid.UUID("12345678-1234-5678-1234-567812345678")})
    assert "hunter2" not in str(caught.value) and "1234" not in str(caught.value)
    with pytest.raises(ValueNotStorable, match="surrogate") as caught:
        serializer.dumps("secret\udcff")
    assert "secret" not in str(caught.value) and "udcff" not in str(caught.value)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10**30, b"1000000000000000000000000000000"),
        (2**64, b"18446744073709551616"),
        (1e-5, b"1e-05"),
        (1e16, b"1e+16"),
        (-0.0, b"-0.0"),
        ({1: "a", None: "b", 1.5: "c", False: "d"}, b'{"1":"a","null":"b","1.5":"c","false":"d"}'),
        ((1, "é"), b'[1,"\xc3\xa9"]'),
        (Level.LOW, b"1"),
        (Name("x\n"), b'"x\\n"'),
        ("\x00\x1f\x7f\u2028", b'"\\u0000\\u001f\x7f\xe2\x80\xa8"'),
        (nest(None, MAX_DEPTH), canonical(nest(None, MAX_DEPTH))),
    ],
    ids=repr,
)
def test_canonical_bytes(serializer: JSONSerializer, value: Any, expected: bytes) -> None:
    assert serializer.dumps(value) == expected


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize(
    "data",
    [
        b"NaN",
        b"[-Infinity]",
        b"1e400",
        b'"\\ud800"',
        b"\xff",
        b"\xef\xbb\xbf{}",
        b"{",
        b"",
        b"1" * 5000,
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"[" * 100_000 + b"]" * 100_000,
        TAGGED_PREFIX + TAGGED_PREFIX + b"{}",
    ],
    ids=lambda d: repr(d[:20]),
)
def test_what_cannot_be_read_is_refused_by_name(serializer: JSONSerializer, data: bytes) -> None:
    with pytest.raises(ValueNotDecodable) as caught:
        serializer.loads(data)
    assert isinstance(caught.value, SessionError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_flask_tagged_value_reads_as_plain_data(serializer: JSONSerializer) -> None:
    assert serializer.loads(TAGGED_PREFIX + b'{" m":"<b>x</b>"}') == {" m": "<b>x</b>"}
    assert serializer.loads(b'{" m":"<b>x</b>"}') == {" m": "<b>x</b>"}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("siblings", [False, True])
@pytest.mark.parametrize("leaf", ["", '\\"[{', '"]}]}', "[" * 80])
def test_the_depth_limit_is_the_same_both_ways(serializer: JSONSerializer, siblings: bool, leaf: str) -> None:
    limit = serializer.dumps(nest(leaf, MAX_DEPTH, siblings))
    assert same(serializer.loads(limit), nest(leaf, MAX_DEPTH, siblings))
    with pytest.raises(ValueNotStorable):
        serializer.dumps(nest(leaf, MAX_DEPTH + 1, siblings))
    with pytest.raises(ValueNotDecodable):
        serializer.loads(json.dumps(nest(leaf, MAX_DEPTH + 1, siblings)).encode())


@needs_orjson
def test_default_serializer_is_fast_with_orjson_and_stdlib_without(monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(default_serializer()) is FastJSONSerializer
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson now raises ImportError
    assert type(default_serializer()) is JSONSerializer
