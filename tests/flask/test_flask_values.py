"""Values shared between the Flask door and the others: a value reads back as its writer stored it."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from flask import Flask, render_template_string, session
from markupsafe import Markup
from werkzeug.test import Client

from session_mw.contrib.flask import FlaskSessions
from session_mw.contrib.flask_serializer import FlaskSerializer
from session_mw.errors import ValueNotDecodable, ValueNotStorable
from session_mw.serializers import MAX_DEPTH, TAGGED_PREFIX, FastJSONSerializer, JSONSerializer
from session_mw.stores.memory import MemoryStore
from session_mw.wsgi import WSGISessionMiddleware, session_of

XSS = "<img src=x onerror=alert(1)>"
PLAINS: list[Callable[[], JSONSerializer]] = [JSONSerializer, FastJSONSerializer]


@pytest.fixture(params=PLAINS, ids=["stdlib", "orjson"])
def plain(request: pytest.FixtureRequest) -> JSONSerializer:
    make: Callable[[], JSONSerializer] = request.param
    try:
        return make()
    except ImportError:  # pragma: no cover - orjson is a dev dependency
        pytest.skip("orjson is not installed")


def nested_lists(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture
def flask_serializer(plain: JSONSerializer) -> FlaskSerializer:
    return FlaskSerializer(plain)


def same_types(a: Any, b: Any) -> bool:
    """Of the same types all the way down (== alone takes a Markup for a str, True for 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return all(map(same_types, a, b))
    if isinstance(a, dict):
        return all(same_types(a[k], b[k]) for k in a)
    return True


def escaped(value: Any) -> str:
    """How Jinja renders a plain dict: escaped."""
    return str(Markup.escape(str(value)))


def test_a_tag_lookalike_written_by_another_door_stays_a_plain_dict(
    plain: JSONSerializer, flask_serializer: FlaskSerializer
) -> None:
    value = {"nick": {" m": XSS}}
    back = flask_serializer.loads(plain.dumps(value))
    assert back == value
    assert type(back["nick"]) is dict and type(back["nick"][" m"]) is str  # not Markup


@pytest.mark.parametrize("value", [{" u": 5}, {" d": "not a date"}, {" b": "!"}, {" t": 1}, {" di": 2}])
def test_malformed_lookalikes_decode_as_plain_data(
    plain: JSONSerializer, flask_serializer: FlaskSerializer, value: Any
) -> None:
    assert flask_serializer.loads(plain.dumps(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        Markup("<b>saved</b>"),
        b"\x00\xffbytes",
        datetime.datetime(2024, 5, 17, 12, 30, 5, tzinfo=datetime.timezone.utc),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        ("a", 1),
        [("success", Markup("<i>ok</i>"))],
        {"nested": {"deeper": [b"x", (Markup("<u>y</u>"),)]}},
        {"tagged": Markup("<b>x</b>"), "lookalike": {" m": XSS}},
    ],
    ids=repr,
)
def test_what_only_flask_can_carry_round_trips_with_its_types(flask_serializer: FlaskSerializer, value: Any) -> None:
    data = flask_serializer.dumps(value)
    assert data.startswith(TAGGED_PREFIX)
    back = flask_serializer.loads(data)
    assert back == value and same_types(back, value)
    assert flask_serializer.dumps(back) == data  # reading does not make a value look changed


def test_a_lookalike_inside_a_tagged_value_comes_back_unchanged(flask_serializer: FlaskSerializer) -> None:
    back = flask_serializer.loads(flask_serializer.dumps({"tagged": b"x", "lookalike": {" m": XSS}}))
    assert type(back["lookalike"][" m"]) is str


@pytest.mark.parametrize(
    "value",
    [
        ["apple", {"n": 1, "é": [True, None, 1.5]}],
        {" m": "looks tagged"},
        {" t": ["looks", "tagged"]},
        '{" x',
        "just a str",
        1e-05,
        2**70,
    ],
    ids=repr,
)
def test_plain_values_are_byte_identical_to_the_other_doors(
    plain: JSONSerializer, flask_serializer: FlaskSerializer, value: Any
) -> None:
    assert flask_serializer.dumps(value) == plain.dumps(value)
    assert flask_serializer.loads(plain.dumps(value)) == value


def test_other_doors_read_a_tagged_value_as_plain_data(
    plain: JSONSerializer, flask_serializer: FlaskSerializer
) -> None:
    data = flask_serializer.dumps({"flash": [("success", Markup("<b>saved</b>"))]})
    assert plain.loads(data) == {"flash": [{" t": ["success", {" m": "<b>saved</b>"}]}]}


@pytest.mark.parametrize(
    "value",
    [
        datetime.date(2024, 1, 1),  # Flask tags only datetimes
        {"m": Markup("x"), "bad": {1, 2}},
        (float("nan"),),
        [Markup("x"), "\ud800"],
        {"m": Markup("x"), "deep": nested_lists(MAX_DEPTH)},
    ],
    ids=repr,
)
def test_flask_is_exactly_as_strict(flask_serializer: FlaskSerializer, value: Any) -> None:
    with pytest.raises(ValueNotStorable):
        flask_serializer.dumps(value)


def test_tagging_counts_towards_the_depth_limit(flask_serializer: FlaskSerializer) -> None:
    value: Any = Markup("x")
    for _ in range(MAX_DEPTH):
        value = [value]
    with pytest.raises(ValueNotStorable):  # the tag's dict is one level more
        flask_serializer.dumps(value)
    assert flask_serializer.loads(flask_serializer.dumps(value[0])) == value[0]
    assert type(flask_serializer.loads(flask_serializer.dumps(["x"]))[0]) is str


@pytest.mark.parametrize(
    "data",
    [
        TAGGED_PREFIX + b'{" b":5}',
        TAGGED_PREFIX + b'{" u":"nope"}',
        TAGGED_PREFIX + b'{" d":"not a date"}',
        TAGGED_PREFIX + b'{" di":[1]}',
        TAGGED_PREFIX + b"{",
        TAGGED_PREFIX + b'{" m":NaN}',
        TAGGED_PREFIX,
        b"\x00",
        b"\xff",
    ],
)
def test_undecodable_values_raise_value_not_decodable(flask_serializer: FlaskSerializer, data: bytes) -> None:
    with pytest.raises(ValueNotDecodable):
        flask_serializer.loads(data)


@pytest.mark.parametrize("value", [{" m": XSS}, {" u": 5}], ids=["markup", "uuid"])
def test_a_lookalike_written_through_the_wsgi_door_is_plain_data_in_flask(value: dict[str, Any]) -> None:
    store = MemoryStore()

    def writer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        session_of(environ)["nick"] = value
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    cookie = Client(WSGISessionMiddleware(writer, store=store)).get("/").headers["Set-Cookie"].split(";")[0]
    app = Flask(__name__)
    FlaskSessions(app, store=store)

    @app.get("/")
    def show() -> str:
        return render_template_string("{{ session['nick'] }}")

    response = app.test_client(use_cookies=False).get("/", headers={"Cookie": cookie})
    assert response.status_code == 200
    assert response.get_data(as_text=True) == escaped(value)


def test_flask_session_reads_what_flask_wrote() -> None:
    app = Flask(__name__)
    FlaskSessions(app)

    @app.post("/")
    def write() -> str:
        session["when"] = datetime.datetime(2024, 5, 17, 12, 0, tzinfo=datetime.timezone.utc)
        session["pair"] = ("a", Markup("<b>b</b>"))
        return "ok"

    @app.get("/")
    def read() -> str:
        return f"{type(session['when']).__name__} {type(session['pair']).__name__} {session['pair'][1]}"

    client = app.test_client()
    client.post("/")
    assert client.get("/").get_data(as_text=True) == "datetime tuple <b>b</b>"


def test_a_read_through_another_door_never_strips_flasks_tags() -> None:
    """Flask flashes a Markup; a plain door reads the session (re-encoding list values); Flask still
    gets its Markup back, as a Markup."""
    from flask import flash, get_flashed_messages

    store = MemoryStore()
    app = Flask(__name__)
    FlaskSessions(app, store=store)

    @app.post("/")
    def write() -> str:
        flash(Markup("<b>saved</b>"))
        return "ok"

    @app.get("/")
    def read() -> str:
        [message] = get_flashed_messages()
        return f"{type(message).__name__} {message}"

    def reader(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen = repr(dict(session_of(environ)))  # reads every value: lists are re-encoded and compared
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [seen.encode()]

    flask_client = app.test_client(use_cookies=False)
    cookie = flask_client.post("/").headers["Set-Cookie"].split(";")[0]
    plain = Client(WSGISessionMiddleware(reader, store=store), use_cookies=False).get("/", headers={"Cookie": cookie})
    assert b"_flashes" in plain.get_data()
    assert plain.status_code == 200 and "Set-Cookie" not in plain.headers
    assert flask_client.get("/", headers={"Cookie": cookie}).get_data(as_text=True) == "Markup <b>saved</b>"
