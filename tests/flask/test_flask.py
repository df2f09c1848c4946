"""Flask-specific behaviour: flash, permanent, app factories, blueprints, settings from app.config."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Blueprint, Flask, flash, get_flashed_messages, jsonify, session
from markupsafe import Markup

from session_mw import ConfigError, SessionConfig
from session_mw.contrib.flask import FlaskSession, FlaskSessions, config_from_flask, current_session


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    FlaskSessions(app)

    @app.post("/flash")
    def do_flash() -> str:
        flash(Markup("<b>saved</b>"), "success")
        flash("plain <i>text</i>")
        return "ok"

    @app.get("/flashes")
    def flashes() -> Any:
        pairs: list[tuple[str, str]] = get_flashed_messages(with_categories=True)  # type: ignore[assignment]
        return jsonify([[c, type(m).__name__, str(m)] for c, m in pairs])

    @app.post("/permanent/<int:on>")
    def permanent(on: int) -> str:
        session["x"] = 1
        session.permanent = bool(on)
        return "ok"

    @app.get("/flags")
    def flags() -> Any:
        return jsonify(new=session.new, permanent=session.permanent, n=session.get("n"))

    @app.post("/n")
    def bump() -> Any:
        session["n"] = session.get("n", 0) + 1
        return jsonify(modified=session.modified, accessed=session.accessed)

    return app


@pytest.fixture
def client() -> Any:
    return make_app().test_client()


def set_cookie(response: Any) -> str:
    return str(response.headers.get("Set-Cookie", ""))


def test_no_secret_key_needed_and_flask_session_is_ours(client: Any) -> None:
    assert "SECRET_KEY" not in client.application.config or client.application.config["SECRET_KEY"] is None
    r = client.post("/n")
    assert r.json == {"modified": True, "accessed": True}
    assert set_cookie(r).startswith("__Host-id=")


def test_flash_round_trips_markup_and_categories(client: Any) -> None:
    client.post("/flash")
    assert client.get("/flashes").json == [
        ["success", "Markup", "<b>saved</b>"],
        ["message", "str", "plain <i>text</i>"],
    ]
    assert client.get("/flashes").json == []  # consumed


def test_permanent_is_a_persistent_cookie(client: Any) -> None:
    assert "Max-Age=28800" in set_cookie(client.post("/permanent/1"))
    assert client.get("/flags").json == {"new": False, "permanent": True, "n": None}
    r = client.post("/permanent/0")
    assert "Max-Age" not in set_cookie(r) and set_cookie(r).startswith("__Host-id=")


def test_new_is_true_only_without_a_stored_session(client: Any) -> None:
    assert client.get("/flags").json["new"] is True
    client.post("/n")
    assert client.get("/flags").json == {"new": False, "permanent": False, "n": 1}


def test_app_factory_and_blueprint() -> None:
    ext = FlaskSessions()
    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @shop.post("/add")
    def add() -> Any:
        session.setdefault("cart", []).append("pear")
        return jsonify(session["cart"])

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["SESSION_MW_IDLE_TIMEOUT"] = "600"
        ext.init_app(app)
        app.register_blueprint(shop)
        return app

    app = create_app()
    assert app.extensions["session_mw"].config.idle_timeout == 600
    c = app.test_client()
    c.post("/shop/add")
    assert c.post("/shop/add").json == ["pear", "pear"]


def test_test_request_context_has_a_readable_session() -> None:
    app = make_app()
    with app.test_request_context("/"):
        assert isinstance(session._get_current_object(), FlaskSession)  # type: ignore[attr-defined]
        assert session.get("cart") is None and current_session().user_id is None


def test_settings_from_app_config_and_their_precedence() -> None:
    flask_defaults = Flask(__name__).config
    assert config_from_flask(flask_defaults) == SessionConfig()  # Flask's defaults never weaken ours
    c = config_from_flask(
        {
            **flask_defaults,
            "SESSION_COOKIE_NAME": "shop",
            "SESSION_COOKIE_SAMESITE": "Strict",
            "PERMANENT_SESSION_LIFETIME": timedelta(hours=1),
            "SESSION_COOKIE_SECURE": False,
            "SESSION_MW_COOKIE_NAME": "wins",
        }
    )
    assert c.cookie_name == "wins" and c.cookie_samesite == "strict"
    assert (c.absolute_timeout, c.idle_timeout) == (3600, 1800) and c.cookie_secure is True
    c = config_from_flask({"PERMANENT_SESSION_LIFETIME": timedelta(minutes=10)})
    assert (c.absolute_timeout, c.idle_timeout) == (600, 600)
    assert config_from_flask({"SESSION_MW_COOKIE_SECURE": "false"}).cookie_secure is False


def test_prefixed_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SESSION_MW_IDLE_TIMEOUT", "300")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    FlaskSessions(app)
    assert app.extensions["session_mw"].config.idle_timeout == 300


@pytest.mark.parametrize(
    "value",
    [
        ["apple", {"n": 1, "é": [True, None, 1.5]}],
        Markup("<b>x</b>"),
        b"\x00bytes",
        {" t": ["looks", "tagged"]},
        {"nested": [Markup("<i>y</i>")]},
        '{" x',
    ],
)
def test_flask_values_round_trip_with_their_types(value: Any) -> None:
    from session_mw.contrib.flask_serializer import FlaskSerializer

    s = FlaskSerializer()
    back = s.loads(s.dumps(value))
    assert back == value and type(back) is type(value)


def test_plain_values_encode_as_in_the_asgi_door() -> None:
    from session_mw.contrib.flask_serializer import FlaskSerializer
    from session_mw.serializers import default_serializer

    value = {"cart": ["apple", "pear"], "n": 3}
    assert FlaskSerializer().dumps(value) == default_serializer().dumps(value)
    assert FlaskSerializer().loads(default_serializer().dumps(value)) == value


def test_environment_settings_sit_between_app_config_and_flask_keys() -> None:
    env = {"SESSION_MW_IDLE_TIMEOUT": "900", "SESSION_MW_COOKIE_NAME": "envname", "SESSION_MW_REQUIRE_REDIS": "1"}
    c = config_from_flask({"SESSION_MW_COOKIE_NAME": "appname", "SESSION_COOKIE_NAME": "flaskname"}, env)
    assert (c.cookie_name, c.idle_timeout) == ("appname", 900)
    c = config_from_flask(
        {"PERMANENT_SESSION_LIFETIME": timedelta(minutes=10)}, {"SESSION_MW_ABSOLUTE_TIMEOUT": "3600"}
    )
    assert (c.absolute_timeout, c.idle_timeout) == (3600, 1800)  # the lifetime, and the idle it implied, yield
    with pytest.raises(ConfigError, match="SESSION_MW_IDLE_TIMOUT"):
        config_from_flask({"SESSION_MW_IDLE_TIMOUT": 5}, {})  # a typo in app.config is an error


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_session_transaction_writes_reach_the_next_request(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    """Flask's documented way to log a user in for a test: writes in session_transaction() are kept."""
    from session_mw import SessionConfig
    from session_mw.contrib.flask import current_session

    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/s.db"}.get(kind) or request.getfixturevalue(
        "redis_url"
    )
    app = Flask(__name__)
    prefix = f"st{tmp_path.name}:"
    FlaskSessions(app, config=SessionConfig(store_url=url, key_prefix=prefix))

    @app.get("/")
    def home() -> str:
        return f"{session.get('x')} {current_session().user_id}"

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["x"] = 42
    assert client.get("/").text == "42 None"
    with client.session_transaction() as sess:
        assert sess["x"] == 42  # reads see what the app stored
        sess["x"] = 43
        sess.user_id = "alice"  # type: ignore[attr-defined]
    assert client.get("/").text == "43 alice"


def test_flask_session_settings_are_mapped_or_named(caplog: pytest.LogCaptureFixture) -> None:
    from session_mw.contrib.flask import config_from_flask

    with caplog.at_level("WARNING", logger="session_mw"):
        config = config_from_flask(
            {
                "SESSION_PERMANENT": True,
                "SESSION_KEY_PREFIX": "app:",
                "SESSION_TYPE": "redis",
                "SESSION_USE_SIGNER": True,
            },
            environ={},
        )
    assert config.remember_default is True and config.key_prefix == "app:"
    assert "SESSION_TYPE has no meaning" in caplog.text and "SESSION_USE_SIGNER has no meaning" in caplog.text
    assert caplog.text.count("SESSION_TYPE") == 1


@pytest.mark.parametrize(
    ("flask_config", "warned", "check"),
    [
        ({"SESSION_COOKIE_SAMESITE": "None"}, "SESSION_COOKIE_SAMESITE='None'", ("cookie_samesite", "none")),
        ({"PERMANENT_SESSION_LIFETIME": timedelta(days=7)}, "PERMANENT_SESSION_LIFETIME", ("absolute_timeout", 604800)),
        ({"SESSION_COOKIE_HTTPONLY": False}, "SESSION_COOKIE_HTTPONLY=False is ignored", ("cookie_secure", True)),
        (
            {"SESSION_REFRESH_EACH_REQUEST": False},
            "SESSION_REFRESH_EACH_REQUEST has no meaning",
            ("cookie_secure", True),
        ),
    ],
)
def test_a_flask_setting_weaker_than_ours_gets_one_warning(
    flask_config: dict[str, Any], warned: str, check: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from session_mw.contrib.flask import config_from_flask

    with caplog.at_level("WARNING", logger="session_mw"):
        config = config_from_flask(flask_config, environ={})
    assert [warned in r.getMessage() for r in caplog.records] == [True]
    assert getattr(config, check[0]) == check[1]


def test_flask_session_defaults_spelled_out_warn_nothing_and_its_id_length_is_our_token_size(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from session_mw.contrib.flask import config_from_flask

    spelled_out = {
        "SESSION_TYPE": "null",
        "SESSION_USE_SIGNER": False,
        "SESSION_SERIALIZATION_FORMAT": "msgpack",
        "SESSION_REDIS": None,
        "SESSION_CLEANUP_N_REQUESTS": None,
        "SESSION_FILE_THRESHOLD": 500,
        "SESSION_ID_LENGTH": 48,
    }
    with caplog.at_level("WARNING", logger="session_mw"):
        config = config_from_flask(spelled_out, environ={})
    assert not caplog.records and config.token_bytes == 48
    with pytest.raises(ConfigError, match="token_bytes"):
        config_from_flask({"SESSION_ID_LENGTH": 8}, environ={})


def test_flask_settings_as_strong_as_ours_warn_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from session_mw.contrib.flask import config_from_flask

    app = Flask(__name__)  # every Flask default, as app.config holds them
    app.config.update(SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=timedelta(hours=1))
    with caplog.at_level("WARNING", logger="session_mw"):
        config_from_flask(app.config, environ={})
    assert not caplog.records


def test_remember_default_gives_a_persistent_cookie_to_a_new_session() -> None:
    app = Flask(__name__)
    app.config.update(SESSION_PERMANENT=True, SESSION_MW_STORE_URL="memory://")
    FlaskSessions(app)

    @app.post("/")
    def write() -> str:
        session["x"] = 1
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        session["after"] = 1
        return "ok"

    client = app.test_client()
    assert "Max-Age=28800" in set_cookie(client.post("/"))
    assert "Max-Age=" in set_cookie(client.post("/logout"))  # the session after a logout has the default too


def test_flask_sessions_redis_settings_become_our_store(redis_url: str, key_prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    app = Flask(__name__)
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=key_prefix)
    FlaskSessions(app)

    @app.post("/")
    def write() -> str:
        session["x"] = 1
        return "ok"

    app.test_client().post("/")
    assert [k.decode() for k in client.scan_iter(match=f"{key_prefix}s:*")]  # the session is in that Redis
    client.close()
