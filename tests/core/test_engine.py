"""The sans-IO engine, driven with strings, records and a fake clock: no store, no server."""

from __future__ import annotations

import pytest

from session_mw import SessionConfig, SessionError
from session_mw.engine import Engine, Incoming
from session_mw.session import Session
from session_mw.stores.base import Meta, Record
from session_mw.tokens import new_token
from tests.conftest import FakeClock

CONFIG = SessionConfig(idle_timeout=1000, absolute_timeout=5000, touch_interval=100)


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    return Engine(CONFIG, clock=clock)


def cookie(token: str) -> str:
    return f"__Host-session={token}"


def stored(engine: Engine, data: dict[str, object], **meta: object) -> Record:
    now = engine.clock()
    fields: dict[str, object] = {"created_at": now, "last_seen": now, "absolute_deadline": now + 5000}
    fields.update(meta)
    return Record({k: engine.serializer.dumps(v) for k, v in data.items()}, Meta(**fields))  # type: ignore[arg-type]


def loaded(engine: Engine, data: dict[str, object], **meta: object) -> tuple[Incoming, Session, str]:
    token = new_token(32)
    incoming = engine.begin(cookie(token))
    session = engine.open(incoming, stored(engine, data, **meta))
    return incoming, session, token


def header_names(engine: Engine, incoming: Incoming, session: Session, status: int = 200) -> list[str]:
    return [name for name, _ in engine.finish(incoming, session, status).headers()]


def test_no_cookie_and_no_use_costs_nothing(engine: Engine) -> None:
    incoming = engine.begin(None)
    assert incoming.key is None
    session = engine.open(incoming, None)
    out = engine.finish(incoming, session)
    assert out.write is None and out.delete is None and out.headers() == []


def test_first_write_creates_a_session_with_a_fresh_token(engine: Engine) -> None:
    incoming = engine.begin("theme=dark")
    session = engine.open(incoming, None, user_agent="Firefox")
    session["cart"] = ["apple"]
    out = engine.finish(incoming, session)
    assert out.write is not None and out.write.mode == "create"
    assert out.write.set == {"cart": b'["apple"]'} and out.write.meta.user_agent == "Firefox"
    assert out.token is not None and out.write.key == engine.digest(out.token) != out.token
    headers = dict(out.headers())
    assert headers["Set-Cookie"].startswith(f"__Host-session={out.token};")
    assert headers["Vary"] == "Cookie" and headers["Cache-Control"] == "no-store"


def test_unknown_token_is_never_adopted(engine: Engine) -> None:
    attacker_token = new_token(32)
    incoming = engine.begin(cookie(attacker_token))
    session = engine.open(incoming, None)  # the store does not know it
    session["x"] = 1
    out = engine.finish(incoming, session)
    assert out.write is not None and out.token != attacker_token
    assert out.write.key != engine.digest(attacker_token)


def test_unknown_token_without_a_write_clears_the_cookie(engine: Engine) -> None:
    incoming = engine.begin(cookie(new_token(32)))
    out = engine.finish(incoming, engine.open(incoming, None))
    assert out.write is None
    assert dict(out.headers())["Set-Cookie"].startswith("__Host-session=;")


def test_read_only_request_writes_nothing(engine: Engine) -> None:
    incoming, session, _ = loaded(engine, {"cart": ["apple"]})
    assert session["cart"] == ["apple"]
    out = engine.finish(incoming, session)
    assert out.write is None and out.headers() == [("Vary", "Cookie")]


def test_only_changed_keys_are_written(engine: Engine) -> None:
    incoming, session, _ = loaded(engine, {"cart": ["apple"], "theme": "dark"})
    session["cart"].append("pear")
    out = engine.finish(incoming, session)
    assert out.write is not None and out.write.mode == "update"
    assert out.write.set == {"cart": b'["apple","pear"]'} and out.write.delete == ()
    assert "Set-Cookie" not in dict(out.headers())


def test_regenerate_moves_data_to_a_new_token(engine: Engine) -> None:
    incoming, session, token = loaded(engine, {"cart": ["apple"]})
    session.regenerate()
    out = engine.finish(incoming, session)
    assert out.write is not None and out.write.mode == "rotate"
    assert out.write.old_key == engine.digest(token) and out.token not in (None, token)
    assert out.write.set == {"cart": b'["apple"]'}


def test_login_regenerates_and_starts_a_new_lifetime(engine: Engine, clock: FakeClock) -> None:
    incoming, session, _ = loaded(engine, {"cart": ["apple"]})
    clock.advance(50)
    session.user_id = "alice"
    out = engine.finish(incoming, session)
    assert out.write is not None and out.write.mode == "rotate"
    assert out.write.meta.user_id == "alice" and out.write.meta.created_at == clock.now
    assert out.write.meta.absolute_deadline == clock.now + 5000


def test_invalidate_deletes_and_expires(engine: Engine) -> None:
    incoming, session, token = loaded(engine, {"user": "x"})
    session.invalidate()
    out = engine.finish(incoming, session)
    assert out.delete == engine.digest(token) and out.write is None
    assert dict(out.headers())["Set-Cookie"].startswith("__Host-session=;")


def test_emptied_session_is_deleted(engine: Engine) -> None:
    incoming, session, token = loaded(engine, {"a": 1})
    session.clear()
    assert engine.finish(incoming, session).delete == engine.digest(token)


@pytest.mark.parametrize(
    ("advance", "meta"),
    [
        (1000, {}),  # idle timeout reached
        (10, {"absolute_deadline": 1_700_000_005.0}),  # absolute timeout reached
    ],
)
def test_expired_sessions_are_dropped_and_deleted(
    engine: Engine, clock: FakeClock, advance: float, meta: dict[str, object]
) -> None:
    token = new_token(32)
    record = stored(engine, {"cart": ["apple"]}, **meta)
    clock.advance(advance)
    incoming = engine.begin(cookie(token))
    session = engine.open(incoming, record)
    assert dict(session) == {} and session.new
    out = engine.finish(incoming, session)
    assert out.delete == engine.digest(token)
    assert dict(out.headers())["Set-Cookie"].startswith("__Host-session=;")


def test_just_inside_the_idle_timeout_is_still_alive(engine: Engine, clock: FakeClock) -> None:
    record = stored(engine, {"a": 1})
    clock.advance(999)
    incoming = engine.begin(cookie(new_token(32)))
    assert engine.open(incoming, record) == {"a": 1}


def test_touch_plan_follows_the_interval(engine: Engine, clock: FakeClock) -> None:
    record = stored(engine, {"a": 1})
    touch = engine.touch()
    assert (touch.interval, touch.idle_timeout) == (100, 1000)
    clock.advance(50)
    assert not engine.touch().due(record.meta)
    clock.advance(50)
    assert engine.touch().due(record.meta)
    incoming = engine.begin(cookie(new_token(32)))
    assert engine.open(incoming, record).last_seen == clock.now


def test_no_save_on_server_errors(engine: Engine) -> None:
    incoming, session, _ = loaded(engine, {"a": 1})
    session["a"] = 2
    session.regenerate()
    out = engine.finish(incoming, session, status=500)
    assert out.write is None and "Set-Cookie" not in dict(out.headers())


def test_update_of_a_session_deleted_meanwhile_expires_the_cookie(engine: Engine) -> None:
    incoming, session, _ = loaded(engine, {"a": 1})
    session["a"] = 2
    out = engine.finish(incoming, session)
    assert dict(out.headers(applied=False))["Set-Cookie"].startswith("__Host-session=;")


def test_remember_sets_a_persistent_cookie_until_the_absolute_deadline(engine: Engine) -> None:
    incoming = engine.begin(None)
    session = engine.open(incoming, None)
    session["a"] = 1
    session.remember = True
    assert "Max-Age=5000" in dict(engine.finish(incoming, session).headers())["Set-Cookie"]
    incoming, session, token = loaded(engine, {"a": 1})
    session.remember = True
    out = engine.finish(incoming, session)
    assert out.write is not None and out.write.meta.remember and out.token == token


def test_vary_and_cache_control_respect_what_the_app_set(engine: Engine) -> None:
    incoming = engine.begin(None)
    session = engine.open(incoming, None)
    session["a"] = 1
    out = engine.finish(incoming, session)
    names = [n for n, _ in out.headers(existing=[("Vary", "Accept-Encoding"), ("Cache-Control", "private")])]
    assert names == ["Set-Cookie", "Vary"]
    assert [n for n, _ in out.headers(existing=[("vary", "accept-encoding, cookie")])] == [
        "Set-Cookie",
        "Cache-Control",
    ]


def test_values_that_are_not_json_raise_a_session_error(engine: Engine) -> None:
    incoming = engine.begin(None)
    session = engine.open(incoming, None)
    session["when"] = object()
    with pytest.raises(SessionError, match="JSON"):
        engine.finish(incoming, session)


def test_undecodable_stored_data_starts_a_new_session(engine: Engine) -> None:
    incoming = engine.begin(cookie(new_token(32)))
    record = stored(engine, {})
    record.data["a"] = b"{not json"
    assert engine.open(incoming, record).new


def test_engine_repr_and_incoming_repr_hide_the_token(engine: Engine) -> None:
    token = new_token(32)
    incoming = engine.begin(cookie(token))
    assert token not in repr(incoming) and token not in repr(engine)
