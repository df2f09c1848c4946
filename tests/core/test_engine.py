"""The sans-IO engine, driven through its plans with scripted store answers: no store, no server.

Each test builds an ``Exchange`` from a Cookie header, answers the operations its plans yield
(h11 style: in-memory input), and checks the operations and headers that come out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from session_mw import SessionConfig
from session_mw.engine import Answer, Engine, Exchange, Headers, Pause
from session_mw.errors import StoreUnavailable
from session_mw.stepping import run
from session_mw.stores.base import AcquireLock, Create, Delete, Load, Meta, Op, Record, ReleaseLock, Rotate, Update
from session_mw.testing import FakeClock
from session_mw.tokens import new_token

CONFIG = SessionConfig(idle_timeout=1000, absolute_timeout=5000)


class Script:
    """Answers a plan's operations: ``record`` for a Load, ``applied`` for updates and rotates."""

    def __init__(self, record: Record | None = None, applied: bool = True) -> None:
        self.record = record
        self.applied = applied
        self.ops: list[Op[Any]] = []
        self.fail: type[Op[Any]] | None = None
        self.locked = False

    def __call__(self, op: Any) -> Any:
        self.ops.append(op)
        if self.fail is not None and isinstance(op, self.fail):
            raise StoreUnavailable("down")
        if isinstance(op, Load):
            return self.record
        if isinstance(op, (Update, Rotate)):
            return self.applied
        if isinstance(op, AcquireLock):
            return not self.locked
        return None

    def writes(self) -> list[Op[Any]]:
        return [op for op in self.ops if not isinstance(op, (Load, AcquireLock, ReleaseLock, Pause))]


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return Engine(CONFIG, clock=clock)


def cookie(token: str) -> str:
    return f"__Host-id={token}"


def stored(engine: Engine, data: dict[str, object], **meta: Any) -> Record:
    now = engine.clock()
    fields: dict[str, Any] = {"created_at": now - 10, "last_seen": now - 10, "absolute_deadline": now + 4990}
    fields.update(meta)
    return Record({k: engine.serializer.dumps(v) for k, v in data.items()}, Meta(**fields))


def opened(engine: Engine, script: Script, token: str | None = None, header: str | None = None) -> Exchange:
    exchange = engine.exchange(header if header is not None else cookie(token or new_token(32)), "Firefox")
    if exchange.needs_load:
        assert run(exchange.opening(), script) is None
    return exchange


def closed(exchange: Exchange, script: Script, status: int = 200, headers: Headers | None = None) -> Headers:
    result = run(exchange.closing(status, headers or []), script)
    assert isinstance(result, list), result
    return result


def header(headers: Headers, name: str) -> str | None:
    values = [v for n, v in headers if n.lower() == name.lower()]
    assert len(values) <= 1, values
    return values[0] if values else None


def test_no_cookie_and_no_use_costs_nothing(engine: Engine) -> None:
    exchange = engine.exchange(None)
    assert not exchange.needs_load and exchange.untouched


def test_first_write_creates_a_session_with_a_fresh_token(engine: Engine) -> None:
    script = Script()
    exchange = opened(engine, script, header="theme=dark")
    exchange.session["cart"] = ["apple"]
    headers = closed(exchange, script)
    [create] = script.writes()
    assert isinstance(create, Create) and dict(create.data) == {"cart": b'["apple"]'}
    assert create.meta.user_agent == "Firefox" and len(create.meta.public_id) == 16
    token = (header(headers, "Set-Cookie") or "").split(";")[0].split("=", 1)[1]
    assert create.key == engine.digest(token) != token
    assert header(headers, "Vary") == "Cookie" and header(headers, "Cache-Control") == "no-store"


def test_an_unknown_token_is_never_adopted_and_its_cookie_is_cleared(engine: Engine) -> None:
    planted = new_token(32)
    script = Script(record=None)
    exchange = opened(engine, script, planted)
    assert header(closed(exchange, script), "Set-Cookie") is None  # the app never used the session
    exchange = opened(engine, script, planted)
    assert exchange.session.get("x") is None
    assert (header(closed(exchange, script), "Set-Cookie") or "").startswith("__Host-id=;")
    exchange = opened(engine, script, planted)
    exchange.session["x"] = 1
    closed(exchange, script)
    create = script.writes()[-1]
    assert isinstance(create, Create) and create.key != engine.digest(planted)


def test_a_read_writes_nothing_and_varies_on_cookie(engine: Engine) -> None:
    script = Script(stored(engine, {"cart": ["apple"]}))
    exchange = opened(engine, script)
    assert exchange.session["cart"] == ["apple"]
    headers = closed(exchange, script, headers=[("Vary", "Accept-Encoding")])
    assert script.writes() == [] and headers == [("Vary", "Accept-Encoding, Cookie")]


def test_only_the_changed_keys_are_written(engine: Engine) -> None:
    script = Script(stored(engine, {"cart": ["apple"], "theme": "dark", "old": 1}))
    exchange = opened(engine, script)
    exchange.session["cart"].append("pear")
    del exchange.session["old"]
    assert header(closed(exchange, script), "Set-Cookie") is None
    [update] = script.writes()
    assert isinstance(update, Update) and dict(update.set) == {"cart": b'["apple","pear"]'}
    assert update.delete == ("old",) and update.remember is None


def test_a_write_to_a_session_ended_meanwhile_is_refused_and_expires_the_cookie(engine: Engine) -> None:
    script = Script(stored(engine, {"cart": []}), applied=False)
    exchange = opened(engine, script)
    exchange.session["cart"] = ["apple"]
    headers = closed(exchange, script)
    assert (header(headers, "Set-Cookie") or "").startswith("__Host-id=;")
    assert exchange.events == ["stale_write_refused"]


def test_regenerate_rotates_all_data_and_keeps_the_lifetime(engine: Engine, clock: FakeClock) -> None:
    record = stored(engine, {"cart": ["apple"]}, user_id="alice", public_id="abc")
    script = Script(record)
    token = new_token(32)
    exchange = opened(engine, script, token)
    exchange.session.regenerate()
    headers = closed(exchange, script)
    [rotate] = script.writes()
    assert isinstance(rotate, Rotate) and rotate.old_key == engine.digest(token) and rotate.old_user_id == "alice"
    assert dict(rotate.data) == {"cart": b'["apple"]'} and rotate.meta.user_id == "alice"
    assert rotate.meta.created_at == record.meta.created_at and rotate.meta.public_id == "abc"
    assert rotate.key != rotate.old_key and rotate.key in [engine.digest(v.split(";")[0][10:]) for _, v in headers]


def test_a_rotate_of_a_session_ended_meanwhile_resurrects_nothing(engine: Engine) -> None:
    script = Script(stored(engine, {"cart": ["apple"]}, user_id="alice"), applied=False)
    exchange = opened(engine, script)
    exchange.session.user_id = "alice"
    headers = closed(exchange, script)
    assert (header(headers, "Set-Cookie") or "").startswith("__Host-id=;")
    assert [type(op) for op in script.writes()] == [Rotate] and exchange.events == ["stale_write_refused"]


def test_an_anonymous_login_keeps_the_cart_and_starts_a_new_lifetime(engine: Engine, clock: FakeClock) -> None:
    script = Script(stored(engine, {"cart": ["apple"]}))
    exchange = opened(engine, script)
    exchange.session.user_id = "alice"
    closed(exchange, script)
    [rotate] = script.writes()
    assert isinstance(rotate, Rotate) and dict(rotate.data) == {"cart": b'["apple"]'}
    assert rotate.meta.created_at == clock() and rotate.meta.absolute_deadline == clock() + 5000


def test_a_user_switch_starts_from_empty_data(engine: Engine) -> None:
    script = Script(stored(engine, {"note": "alice's secret"}, user_id="alice"))
    exchange = opened(engine, script)
    exchange.session.user_id = "bob"
    assert dict(exchange.session) == {}
    closed(exchange, script)
    [rotate] = script.writes()
    assert isinstance(rotate, Rotate) and dict(rotate.data) == {} and rotate.meta.user_id == "bob"
    assert rotate.old_user_id == "alice"


def test_the_same_user_logging_in_again_gets_a_new_token(engine: Engine, clock: FakeClock) -> None:
    script = Script(stored(engine, {"cart": ["apple"]}, user_id="alice"))
    exchange = opened(engine, script)
    exchange.session.user_id = "alice"
    closed(exchange, script)
    [rotate] = script.writes()
    assert isinstance(rotate, Rotate) and dict(rotate.data) == {"cart": b'["apple"]'}
    assert rotate.meta.created_at == clock()


@pytest.mark.parametrize(
    "logout",
    [lambda s: s.invalidate(), lambda s: s.clear(), lambda s: setattr(s, "user_id", None)],
    ids=["invalidate", "clear", "user_id=None"],
)
def test_every_logout_idiom_deletes_the_record_and_expires_the_cookie(
    engine: Engine, logout: Callable[[Any], None]
) -> None:
    script = Script(stored(engine, {"cart": ["apple"]}, user_id="alice"))
    token = new_token(32)
    exchange = opened(engine, script, token)
    logout(exchange.session)
    assert exchange.session.user_id is None and dict(exchange.session) == {}
    headers = closed(exchange, script)
    assert script.writes() == [Delete(engine.digest(token), "alice")]
    assert (header(headers, "Set-Cookie") or "").startswith("__Host-id=;")


def test_data_written_after_a_clear_goes_to_a_new_session(engine: Engine) -> None:
    script = Script(stored(engine, {"cart": ["apple"]}, user_id="alice"))
    token = new_token(32)
    exchange = opened(engine, script, token)
    exchange.session.clear()
    exchange.session["flash"] = "bye"
    headers = closed(exchange, script)
    delete, create = script.writes()
    assert delete == Delete(engine.digest(token), "alice")
    assert isinstance(create, Create) and create.meta.user_id is None and dict(create.data) == {"flash": b'"bye"'}
    assert not (header(headers, "Set-Cookie") or "").startswith("__Host-id=;")


def test_a_server_error_saves_nothing(engine: Engine) -> None:
    script = Script(stored(engine, {"cart": []}))
    exchange = opened(engine, script)
    exchange.session["cart"] = ["lost"]
    assert header(closed(exchange, script, status=500), "Set-Cookie") is None
    assert script.writes() == []


def test_remember_gives_a_max_age_capped_by_the_current_absolute_timeout(clock: FakeClock) -> None:
    engine = Engine(CONFIG.replace(absolute_timeout=1200), clock=clock)
    script = Script(stored(engine, {"x": 1}, created_at=clock() - 200, absolute_deadline=clock() + 10**6))
    exchange = opened(engine, script)
    exchange.session.remember = True
    headers = closed(exchange, script)
    assert "Max-Age=1000" in (header(headers, "Set-Cookie") or "")
    [update] = script.writes()
    assert isinstance(update, Update) and update.remember is True


def test_a_session_cookie_is_never_cached_by_a_shared_cache(engine: Engine) -> None:
    script = Script()
    exchange = opened(engine, script, header="")
    exchange.session["x"] = 1
    headers = closed(exchange, script, headers=[("Cache-Control", "public, max-age=3600")])
    assert header(headers, "Cache-Control") == "no-store"
    read = opened(engine, Script(stored(engine, {"x": 1})))
    assert read.session["x"] == 1
    assert header(closed(read, Script(), headers=[("Cache-Control", "max-age=60")]), "Cache-Control") == "max-age=60"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (object(), "not storable"),
        (math.nan, "NaN"),
        ([[[[[[[[[[[]]]]]]]]]]] * 1, "deep"),
        ("x" * 300_000, "too large"),
    ],
)
def test_a_value_that_cannot_be_stored_is_a_500_and_writes_nothing(engine: Engine, value: object, reason: str) -> None:
    if reason == "deep":
        for _ in range(200):
            value = [value]
    script = Script()
    exchange = opened(engine, script, header="")
    exchange.session["x"] = value
    result = run(exchange.closing(200, []), script)
    assert isinstance(result, Answer) and result.status == 500 and script.writes() == []


def test_a_user_id_that_cannot_be_stored_is_a_500(engine: Engine) -> None:
    script = Script()
    exchange = opened(engine, script, header="")
    exchange.session.user_id = "\ud800"
    result = run(exchange.closing(200, []), script)
    assert isinstance(result, Answer) and result.status == 500 and script.writes() == []


def test_an_undecodable_value_drops_the_session(engine: Engine) -> None:
    token = new_token(32)
    script = Script(Record({"cart": b"{not json"}, stored(engine, {}).meta))
    exchange = opened(engine, script, token)
    assert dict(exchange.session) == {} and not exchange.live
    headers = closed(exchange, script)
    assert script.writes() == [Delete(engine.digest(token))]
    assert (header(headers, "Set-Cookie") or "").startswith("__Host-id=;")


def test_a_store_outage_is_a_503_at_the_load_and_at_the_save(engine: Engine) -> None:
    script = Script(stored(engine, {"x": 1}))
    script.fail = Load
    exchange = engine.exchange(cookie(new_token(32)))
    answer = run(exchange.opening(), script)
    assert isinstance(answer, Answer) and answer.status == 503 and ("Retry-After", "5") in answer.headers
    script.fail = Update
    exchange = opened(engine, script)
    exchange.session["x"] = 2
    result = run(exchange.closing(200, []), script)
    assert isinstance(result, Answer) and result.status == 503


def test_a_lock_held_elsewhere_past_the_timeout_lets_reads_and_a_logout_through_but_no_write(
    clock: FakeClock,
) -> None:
    engine = Engine(CONFIG.replace(locking=True, lock_timeout=0.2), clock=clock)
    script = Script(stored(engine, {"x": 1}, user_id="alice"))
    script.locked = True

    def contended() -> Exchange:
        exchange = engine.exchange(cookie(new_token(32)))
        assert run(exchange.opening(), script) is None and not exchange.holds_lock
        return exchange

    reader = contended()
    pauses = [op for op in script.ops if isinstance(op, Pause)]
    assert sum(p.seconds for p in pauses) == pytest.approx(0.2) and isinstance(script.ops[-1], Load)
    assert reader.session["x"] == 1 and isinstance(run(reader.closing(200, []), script), list)
    writer = contended()
    writer.session["x"] = 2
    assert run(writer.closing(200, []), script) is engine.busy and script.writes() == []
    logout = contended()
    logout.session.invalidate()
    headers = run(logout.closing(303, []), script)
    assert isinstance(headers, list) and [type(op) for op in script.writes()] == [Delete]
    assert (header(headers, "Set-Cookie") or "").startswith("__Host-id=;")


def test_a_held_lock_is_released_after_the_save(clock: FakeClock) -> None:
    engine = Engine(CONFIG.replace(locking=True), clock=clock)
    script = Script(stored(engine, {"x": 1}))
    exchange = opened(engine, script)
    assert exchange.holds_lock
    exchange.session["x"] = 2
    closed(exchange, script)
    assert isinstance(script.ops[-1], ReleaseLock) and not exchange.holds_lock


def test_the_touch_interval_is_a_tenth_of_any_idle_timeout() -> None:
    for idle in (2, 3.5, 10, 1800):
        engine = Engine(SessionConfig(idle_timeout=idle, absolute_timeout=10_000))
        assert engine.lifetime.touch_interval == pytest.approx(idle / 10)


class Keyed(Script):
    """A scripted store that knows several keys: ``records`` by store key."""

    def __init__(self, records: dict[str, Record]) -> None:
        super().__init__()
        self.records = records

    def __call__(self, op: Any) -> Any:
        if isinstance(op, Load):
            self.ops.append(op)
            return self.records.get(op.key)
        return super().__call__(op)


def _header(*tokens: str) -> str:
    return "; ".join(cookie(t) for t in tokens)


@pytest.mark.parametrize("live_at", [0, 1, 2])
def test_of_several_tokens_ours_is_the_one_live_session(engine: Engine, live_at: int) -> None:
    tokens = [new_token(32) for _ in range(3)]
    script = Keyed({engine.digest(tokens[live_at]): stored(engine, {"cart": ["apple"]}, user_id="alice")})
    exchange = opened(engine, script, header=_header(*tokens))
    assert exchange.live and exchange.session.user_id == "alice"
    assert [op.key for op in script.ops if isinstance(op, Load)] == [engine.digest(t) for t in tokens]
    exchange.session["cart"].append("pear")
    headers = closed(exchange, script)
    [update] = script.writes()
    assert isinstance(update, Update) and update.key == engine.digest(tokens[live_at])
    assert not any(name == "Set-Cookie" for name, _ in headers)


def test_with_locking_the_chosen_session_is_locked_then_read_again(clock: FakeClock) -> None:
    engine = Engine(CONFIG.replace(locking=True), clock=clock)
    dead, live = new_token(32), new_token(32)
    script = Keyed({engine.digest(live): stored(engine, {"x": 1})})
    exchange = opened(engine, script, header=_header(dead, live))
    kinds = [(type(op).__name__, op.key) for op in script.ops if isinstance(op, (Load, AcquireLock))]
    key = engine.digest(live)
    assert kinds == [("Load", engine.digest(dead)), ("Load", key), ("AcquireLock", key), ("Load", key)]
    assert exchange.holds_lock and exchange.session["x"] == 1


def test_two_live_sessions_are_both_refused_and_neither_is_expired(engine: Engine) -> None:
    mine, planted = new_token(32), new_token(32)
    script = Keyed({engine.digest(t): stored(engine, {"x": 1}, user_id="alice") for t in (mine, planted)})
    exchange = opened(engine, script, header=_header(planted, mine))
    assert not exchange.live and exchange.session.get("x") is None and exchange.session.user_id is None
    assert closed(exchange, script) == [("Vary", "Cookie")]  # used, yet nothing expired
    assert script.writes() == []


def test_several_dead_tokens_are_expired_like_one(engine: Engine) -> None:
    exchange = opened(engine, Keyed({}), header=_header(new_token(32), new_token(32)))
    exchange.session.get("x")
    headers = closed(exchange, Keyed({}))
    assert ("Set-Cookie", engine.expire_cookie) in headers


def test_a_value_we_could_not_have_set_is_never_expired(engine: Engine) -> None:
    exchange = engine.exchange("__Host-id=eyJhIjoxfQ.Zx1.sig", "Firefox")
    assert not exchange.needs_load and not exchange.presented
    exchange.session.get("x")
    assert closed(exchange, Script()) == [("Vary", "Cookie")]


@pytest.mark.parametrize("stored_id", ["0123456789abcdef", ""])  # "": a first-release record has none
def test_the_sessions_public_id_is_the_one_its_listing_shows(engine: Engine, stored_id: str) -> None:
    from session_mw.manage import public_id

    token = new_token(32)
    record = stored(engine, {"x": 1}, user_id="alice", public_id=stored_id)
    exchange = opened(engine, Script(record), token)
    assert exchange.session.public_id == public_id(engine.digest(token), record.meta)
    assert exchange.session.public_id and len(exchange.session.public_id) == 16
