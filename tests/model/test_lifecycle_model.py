"""A model-checked lifecycle: hypothesis drives the real engine and each real store through
interleaved requests, and checks every step against a small reference model.

Requests overlap: a request loads, the app mutates, logs in, regenerates, logs out, clears or
revokes the user's sessions, time passes, other requests start and finish, and only then does
the first one finish. The model says, for every token, whether it is live and what it holds.
Checked after every step: a dead token never resolves again; nothing revoked comes back; a
live session holds exactly the model's data and user; no data crosses users; timeouts follow
the configuration; a user active more often than 90 % of the idle timeout stays logged in.

CI runs a bounded number of examples per store; for a long search::

    SESSION_MW_MODEL_EXAMPLES=2000 ./scripts/test tests/model
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from session_mw import SessionConfig
from session_mw.engine import Engine, Exchange
from session_mw.manage import Sessions
from session_mw.stepping import run
from session_mw.stores.base import Close, SessionsOf, Store
from session_mw.stores.memory import MemoryStore
from session_mw.stores.sqlite import SQLiteStore
from session_mw.testing import FakeClock

IDLE, ABSOLUTE = 100.0, 400.0
CONFIG = SessionConfig(idle_timeout=IDLE, absolute_timeout=ABSOLUTE, cookie_secure=True)
USERS = ("alice", "bob", "carol")
BROWSERS = 2
EXAMPLES = int(os.environ.get("SESSION_MW_MODEL_EXAMPLES", "100"))


KEYS = st.sampled_from(["cart", "note", "n"])
ACTION = st.one_of(
    st.tuples(st.just("set"), KEYS, st.integers(0, 3)),
    st.tuples(st.just("pop"), KEYS),
    st.tuples(st.sampled_from(["regenerate", "invalidate", "clear", "logout", "everywhere"])),
    st.tuples(st.just("login"), st.sampled_from(USERS)),
)
ACTIONS = st.lists(ACTION, max_size=3)
STATUS = st.sampled_from([200, 200, 200, 500])


def enc(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Live:
    """The model of one live session."""

    data: dict[str, Any]
    user: str | None
    created: float
    last_seen: float

    def expires(self) -> float:
        return min(self.last_seen + IDLE, self.created + ABSOLUTE)


@dataclass
class Request:
    """One request in flight, and what the model knew when it loaded."""

    browser: int
    token: str | None
    exchange: Exchange
    loaded: dict[str, Any] | None  # the data it saw, None when it brought no live session
    # what the app's session must look like, by the model's own rules (Django's for logins)
    data: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    modified: bool = False
    rotate: bool = False
    login: bool = False
    invalidated: bool = False

    def logout(self) -> None:
        self.data, self.user, self.modified = {}, None, True
        self.invalidated, self.rotate, self.login = True, False, False


class Lifecycle(RuleBasedStateMachine):
    """Parametrised by ``make_store(clock)``: a fresh, empty store on the given clock."""

    make_store: Callable[[FakeClock], Store]
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = self.make_store(self.clock)
        self.engine = Engine(CONFIG, clock=self.clock)
        self.cookies: list[str | None] = [None] * BROWSERS
        self.live: dict[str, Live] = {}
        self.dead: set[str] = set()

    def teardown(self) -> None:
        self.store.execute(Close())

    # -- the model's view of time ----------------------------------------------------------

    def _expire(self) -> None:
        now = self.clock()
        for token in [t for t, s in self.live.items() if now >= s.expires()]:
            self._kill(token)

    def _kill(self, token: str) -> None:
        self.live.pop(token, None)
        self.dead.add(token)

    # -- rules ---------------------------------------------------------------------------------

    @initialize(users=st.lists(st.sampled_from([None, *USERS]), min_size=BROWSERS, max_size=BROWSERS))
    def every_browser_starts_with_a_session(self, users: list[str | None]) -> None:
        """Start where races happen: each browser already holds a session (the search goes deeper)."""
        for browser, user in enumerate(users):
            request = self.begin(browser)
            self._act(request, [("set", "cart", browser), *([("login", user)] if user else [])])
            self.finish(request, 200)

    @rule(seconds=st.sampled_from([0.5, 5, 9, 10, 11, 50, 89, 90, 99, 101, 250]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._expire()

    def begin(self, browser: int) -> Request:
        self._expire()
        token = self.cookies[browser]
        exchange = self.engine.exchange(f"__Host-id={token}" if token else None, f"Browser/{browser}")
        if exchange.needs_load:
            assert run(exchange.opening(), self.store.execute) is None
        session = exchange.session
        model = self.live.get(token) if token else None
        if model is None:
            assert not exchange.live, "a dead or unknown token resolved to a session"
            assert dict(session) == {} and session.user_id is None
            loaded = None
        else:
            assert exchange.live, "a live session was not found"
            assert dict(session) == model.data and session.user_id == model.user
            if model.last_seen + self.engine.lifetime.touch_interval <= self.clock():
                model.last_seen = self.clock()
            loaded = {k: json.loads(enc(v)) for k, v in model.data.items()}
        request = Request(browser, token if model is not None else None, exchange, loaded)
        if model is not None:
            request.data, request.user = dict(model.data), model.user
        return request

    def _act(self, request: Request, actions: list[tuple[Any, ...]]) -> None:
        session = request.exchange.session
        for action in actions:
            kind = action[0]
            if kind == "set":
                session[action[1]] = action[2]
                request.data[action[1]] = action[2]
                request.modified = True
            elif kind == "pop":
                session.pop(action[1], None)
                request.data.pop(action[1], None)
                request.modified = True
            elif kind == "regenerate":
                session.regenerate()
                request.rotate = True
            elif kind == "login":
                session.user_id = action[1]
                if request.user is not None and request.user != action[1]:
                    request.data = {}  # nothing of one user's reaches the next
                request.user, request.login, request.rotate = action[1], True, True
            elif kind in ("invalidate", "clear"):
                getattr(session, kind)()
                request.logout()
            elif kind == "logout":
                session.user_id = None
                if request.user is not None:
                    request.logout()
            elif kind == "everywhere":
                self._revoke_everywhere(request)
            assert dict(session) == request.data and session.user_id == request.user, kind

    def _revoke_everywhere(self, request: Request) -> None:
        """ "Log out everywhere" from inside a request: every live session of its user ends now."""
        exchange = request.exchange
        user = exchange.session.user_id
        revoked = run(Sessions(self.engine.lifetime, exchange).revoking_all(), self.store.execute)
        if user is None:
            assert revoked == 0
            return
        self._expire()
        doomed = [t for t, s in self.live.items() if s.user == user]
        assert revoked == len(doomed)
        for token in doomed:
            self._kill(token)
        if request.token in doomed:
            request.logout()  # this session was among them

    @rule(browser=st.integers(0, BROWSERS - 1), actions=ACTIONS, status=STATUS)
    def a_quick_request(self, browser: int, actions: list[tuple[Any, ...]], status: int) -> None:
        request = self.begin(browser)
        self._act(request, actions)
        self.finish(request, status)

    @rule(target=requests, browser=st.integers(0, BROWSERS - 1), actions=ACTIONS)
    def a_slow_request_starts(self, browser: int, actions: list[tuple[Any, ...]]) -> Request:
        request = self.begin(browser)
        self._act(request, actions)
        return request

    @rule(request=consumes(requests), actions=ACTIONS, status=STATUS)
    def a_slow_request_ends(self, request: Request, actions: list[tuple[Any, ...]], status: int) -> None:
        self._act(request, actions)
        self.finish(request, status)

    def finish(self, request: Request, status: int) -> None:
        self._expire()
        exchange, session = request.exchange, request.exchange.session
        result = run(exchange.closing(status, []), self.store.execute)
        assert isinstance(result, list)
        set_cookie = [v for n, v in result if n == "Set-Cookie"]
        issued = set_cookie[0].split(";", 1)[0].split("=", 1)[1] if set_cookie else None
        now = self.clock()
        token = request.token
        still_live = token is not None and token in self.live
        assert dict(session) == request.data and session.user_id == request.user
        content = bool(request.data) or request.user is not None
        created: float | None = None  # when a new session is expected: its creation time
        if status >= 500:  # nothing is saved, but a logout stays a logout
            assert issued in (None, ""), "a failed request created or rotated a session"
            if request.invalidated and request.loaded is not None:
                assert token is not None
                self._kill(token)
                assert issued == "", "a logout answered with an error kept its cookie"
        elif request.invalidated or request.loaded is None:
            if request.invalidated and token is not None:
                self._kill(token)
            created = now if content else None
        elif not content:
            assert token is not None
            self._kill(token)
        elif request.rotate:
            if still_live:
                assert token is not None
                old = self.live[token]
                self._kill(token)
                created = now if request.login else old.created
            else:
                assert issued == "", "a rotate of a session ended meanwhile was not refused"
        else:
            loaded = request.loaded
            written = {k: v for k, v in request.data.items() if k not in loaded or enc(v) != enc(loaded[k])}
            removed = [k for k in loaded if k not in request.data] if request.modified else []
            if written or removed:
                if still_live:
                    assert token is not None
                    model = self.live[token]
                    model.data.update(written)
                    for k in removed:
                        model.data.pop(k, None)
                    model.last_seen = now
                    assert not set_cookie, "an update sent a cookie"
                else:
                    assert issued == "", "a write to a session ended meanwhile was not refused"
        if created is not None:
            assert issued and issued not in self.dead, "a session with content was not created afresh"
            self.live[issued] = Live(dict(request.data), request.user, created, now)
        else:
            assert not issued, "a token was issued where none was due"
        if issued == "" or (issued is None and set_cookie):
            self.cookies[request.browser] = None
        elif issued:
            self.cookies[request.browser] = issued

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def the_store_agrees_with_the_model(self) -> None:
        self._expire()
        assert not (self.dead & self.live.keys())
        for user in USERS:
            in_store = {key for key, _ in self.store.execute(SessionsOf(user, self.engine.lifetime))}
            expected = {self.engine.digest(t) for t, s in self.live.items() if s.user == user}
            assert in_store == expected, f"{user}'s sessions differ from the model"


def _machine(make: Callable[[FakeClock], Store]) -> type[Lifecycle]:
    return type("Machine", (Lifecycle,), {"make_store": staticmethod(make)})


SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _run(make: Callable[[FakeClock], Store], share: float = 1.0) -> None:
    """``share`` of the examples: a store whose every operation is a network round trip gets fewer."""
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(_machine(make), settings=settings(SETTINGS, max_examples=max(1, int(EXAMPLES * share))))


def test_the_lifecycle_on_memory() -> None:
    _run(lambda clock: MemoryStore(clock))


def test_the_lifecycle_on_sqlite(tmp_path: Path) -> None:
    files: Iterator[int] = iter(range(10**9))
    _run(lambda clock: SQLiteStore(tmp_path / f"s{next(files)}.db", clock=clock))


def test_the_lifecycle_on_redis(redis_url: str, key_prefix: str) -> None:
    from session_mw.stores.redis import RedisStore

    prefixes: Iterator[int] = iter(range(10**9))
    _run(lambda clock: RedisStore.from_url(redis_url, f"{key_prefix}{next(prefixes)}:", clock=clock), share=0.6)


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="session_mw")
