"""Session: the mapping the app sees.

A real ``dict`` subclass, as Starlette's and Flask's sessions are, so it goes straight into
``json.dumps``, ``JSONResponse`` and templates. Reads set ``accessed``, mutators set
``modified``; what is actually saved is found by comparing each value's encoding with the
one loaded, so ``session["cart"].append(x)`` is saved with no extra ceremony.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .serializers import TAGGED_PREFIX

_MISSING: Any = object()


class Session(dict[str, Any]):
    """The session of one request: its data plus the app's intents for it."""

    __slots__ = (
        "_authenticated_at",
        "_cleared",
        "_clock",
        "_created_at",
        "_csrf",
        "_invalidated",
        "_last_seen",
        "_loaded",
        "_loader",
        "_login",
        "_new",
        "_public_id",
        "_reauth",
        "_regenerate",
        "_remember",
        "_remember_default",
        "_user_id",
        "accessed",
        "modified",
        "user_agent",
    )

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        loaded: Mapping[str, bytes] | None = None,
        new: bool = True,
        created_at: float = 0.0,
        last_seen: float = 0.0,
        user_id: str | None = None,
        remember: bool = False,
        user_agent: str = "",
    ) -> None:
        if data:
            dict.update(self, data)
        self.accessed = False
        self.modified = False
        self._new = new
        self._created_at = created_at
        self._last_seen = last_seen
        self.user_agent = user_agent
        self._user_id = user_id
        self._remember = self._remember_default = remember
        self._regenerate = False
        self._invalidated = False
        self._login = False
        self._loaded: Mapping[str, bytes] = loaded or {}
        self._loader: Callable[[Session], None] | None = None
        self._public_id: str | None = None
        self._authenticated_at: float | None = None
        self._reauth = False
        self._cleared = False
        self._clock: Callable[[], float] = time.time
        self._csrf: Callable[[], str] | None = None

    def _use(self) -> None:
        """Every read and write passes here: mark the session used, and load it on first use."""
        self.accessed = True
        loader = self._loader
        if loader is not None:
            self._loader = None
            loader(self)

    def mark_accessed(self) -> None:
        """Starlette's session protocol: ``request.session`` calls it, so a response built from the
        session (``JSONResponse(request.session)`` reads it below our methods) still varies on Cookie."""
        self._use()

    def mark_modified(self) -> None:
        """Starlette's session protocol: the session is to be saved, as after any mutator."""
        self._touched()

    def defer(self, loader: Callable[[Session], None]) -> None:
        """Load lazily: ``loader`` fills this session the first time the app uses it."""
        self._loader = loader

    def undefer(self) -> Callable[[Session], None] | None:
        """Take the deferred loader back (the door loads the session itself); the loader, if any."""
        loader, self._loader = self._loader, None
        return loader

    @property
    def pending(self) -> bool:
        """True while a deferred session has not been used (and so not loaded)."""
        return self._loader is not None

    def _fill(
        self,
        data: Mapping[str, Any],
        loaded: Mapping[str, bytes],
        created_at: float,
        last_seen: float,
        user_id: str | None,
        remember: bool,
        user_agent: str,
        public_id: str | None = None,
        authenticated_at: float = 0.0,
    ) -> None:
        dict.update(self, data)
        self._public_id = public_id
        self._authenticated_at = authenticated_at or None
        self._loaded = loaded
        self._new = False
        self._created_at = created_at
        self._last_seen = last_seen
        self._user_id = user_id
        self._remember = remember
        self.user_agent = user_agent

    @property
    def public_id(self) -> str | None:
        """The stored session's opaque id, as ``session_manager().list()`` shows it; never the token.
        None for a session not stored yet; a login gives a new one."""
        self._use()
        return self._public_id

    @property
    def new(self) -> bool:
        """True when no stored session came with the request (Flask's meaning)."""
        self._use()
        return self._new

    @new.setter
    def new(self, value: bool) -> None:
        self._new = value

    @property
    def created_at(self) -> float:
        """When the session (or its current login) began, in seconds since the epoch."""
        self._use()
        return self._created_at

    @property
    def last_seen(self) -> float:
        """The last request that refreshed the idle expiry, in seconds since the epoch."""
        self._use()
        return self._last_seen

    @property
    def authenticated_at(self) -> float | None:
        """When the user last proved a credential (the login or ``reauthenticated()``); None when
        no user is logged in. Activity never moves it."""
        self._use()
        return self._authenticated_at if self._user_id is not None else None

    def requires_reauth(self, max_age: float) -> bool:
        """True when a sensitive action should ask for the credential again: no user is logged in,
        or the last proof is older than ``max_age`` seconds."""
        at = self.authenticated_at
        return at is None or self._clock() - at > max_age

    def reauthenticated(self) -> None:
        """The user just proved a credential again (a password, a second factor): the token is
        regenerated and ``authenticated_at`` is now (and, with ``reauth_resets_lifetime``, the
        absolute lifetime starts again)."""
        self._use()
        if self._user_id is None:
            raise RuntimeError("reauthenticated() needs a logged-in session (call login() first)")
        self._reauth = True
        self._authenticated_at = self._clock()
        self.regenerate()

    @property
    def reauth_requested(self) -> bool:
        return self._reauth

    @property
    def csrf_token(self) -> str:
        """This session's synchronizer token for forms and ``X-CSRF-Token``: derived from the
        session token, so it changes whenever the token does (a login, a regenerate)."""
        self._use()
        if self._csrf is None:
            raise RuntimeError("csrf_token needs the session middleware (this session has no token source)")
        return self._csrf()

    # -- intents -------------------------------------------------------------------

    def regenerate(self) -> None:
        """Move the session to a new token at the end of this request; the old one dies.

        Call it on login and on any change of privilege (session fixation defence).
        """
        self._use()
        self._regenerate = True
        self.modified = True

    def invalidate(self) -> None:
        """Log out: drop every key and the login, delete the session in the store, expire the cookie.

        Data written after this goes to a new session under a new token.
        """
        self._use()
        dict.clear(self)
        self._invalidated = True
        self._cleared = False
        self._regenerate = False
        self._login = False
        self._reauth = False
        self._user_id = None
        self._authenticated_at = None
        self._remember = self._remember_default  # a new session after a logout, with the default
        self.modified = True

    def login(self, user_id: str) -> None:
        """Bind the session to ``user_id``: always a new token and a new absolute lifetime.

        Django's rule for the data: an anonymous session keeps it (the cart survives the
        login); a session of another user starts empty (nothing of Alice's reaches Bob).
        """
        if not isinstance(user_id, str) or not user_id:
            raise TypeError("user_id must be a non-empty str")
        self._use()
        if self._user_id is not None and self._user_id != user_id:
            dict.clear(self)
        self._user_id = user_id
        self._login = True
        self._authenticated_at = self._clock()
        self.regenerate()

    @property
    def user_id(self) -> str | None:
        """The user this session belongs to (indexed, for "log out everywhere").

        Setting it is a login (``login()``): the token is regenerated even for the same user.
        Setting None is a logout (``invalidate()``).
        """
        self._use()
        return self._user_id

    @user_id.setter
    def user_id(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError("user_id must be a str or None")
        if value is None or value == "":
            self._use()
            if self._user_id is not None:
                self.invalidate()
            return
        self.login(value)

    @property
    def remember(self) -> bool:
        """True: a persistent cookie (Max-Age up to the absolute timeout); False: until the browser closes."""
        self._use()
        return self._remember

    @remember.setter
    def remember(self, value: bool) -> None:
        self._use()
        if bool(value) != self._remember:
            self._remember = bool(value)
            self.modified = True

    @property
    def regenerate_requested(self) -> bool:
        return self._regenerate

    @property
    def invalidated(self) -> bool:
        return self._invalidated

    @property
    def logged_in(self) -> bool:
        """True when ``login()`` ran in this request (a new absolute lifetime starts)."""
        return self._login

    # -- reads ---------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._use()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        self._use()
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self._use()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._use()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._use()
        return dict.__len__(self)

    def keys(self) -> Any:
        self._use()
        return dict.keys(self)

    def values(self) -> Any:
        self._use()
        return dict.values(self)

    def items(self) -> Any:
        self._use()
        return dict.items(self)

    def __eq__(self, other: object) -> bool:
        self._use()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self._use()
        return dict.__ne__(self, other)

    def __reversed__(self) -> Iterator[str]:
        self._use()
        return dict.__reversed__(self)

    def copy(self) -> dict[str, Any]:
        self._use()
        return dict(dict.items(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)}, user_id={self._user_id!r})"

    # -- mutators ------------------------------------------------------------------

    def _touched(self) -> None:
        self._use()
        self.modified = True

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError("session keys must be str")
        self._touched()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._touched()
        dict.__delitem__(self, key)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        self._touched()
        if default is _MISSING:
            return dict.pop(self, key)
        return dict.pop(self, key, default)

    def popitem(self) -> tuple[str, Any]:
        self._touched()
        return dict.popitem(self)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._touched()
        if not isinstance(key, str):
            raise TypeError("session keys must be str")
        return dict.setdefault(self, key, default)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        self._touched()
        incoming = dict(other, **kwargs)
        if any(not isinstance(k, str) for k in incoming):
            raise TypeError("session keys must be str")
        dict.update(self, incoming)

    if not TYPE_CHECKING:  # typed as dict's own; typeshed's overloads admit no override

        def __ior__(self, other):
            self.update(other)  # so ``session |= {...}`` is tracked like ``update``
            return self

        def __or__(self, other):
            self._use()  # a lazy session is loaded before it is read
            return dict.__or__(self, other)

        def __ror__(self, other):
            self._use()
            return dict.__ror__(self, other)

    def clear(self) -> None:
        """Empty the session completely, login included: the Flask and Starlette logout idiom."""
        self.invalidate()
        self._cleared = True

    @property
    def cleared(self) -> bool:
        return self._cleared

    # -- for the engine ------------------------------------------------------------

    def changes(self, dumps: Any, loads: Any = None) -> tuple[dict[str, bytes], tuple[str, ...]]:
        """Encodings of the keys that differ from what was loaded, and the keys removed.

        Without a mutator call only a list or dict value can have changed (in place), so a
        read-only request re-encodes just those. A value another door tagged (Flask's Markup,
        say) that this door reads as plain data is unchanged if it still decodes alike: a
        read never strips another door's tags.
        """
        loaded = self._loaded
        changed = {}
        everything = self.modified
        for key, value in dict.items(self):
            if everything or isinstance(value, (list, dict)):
                encoded = dumps(value)
                before = loaded.get(key)
                if before == encoded:
                    continue
                tagged_elsewhere = loads is not None and before is not None and before[:2] == TAGGED_PREFIX
                if tagged_elsewhere and dumps(loads(before)) == encoded:
                    continue
                changed[key] = encoded
        if not everything:
            return changed, ()
        removed = tuple(k for k in loaded if not dict.__contains__(self, k))
        return changed, removed

    def encoded(self, dumps: Any) -> dict[str, bytes]:
        return {key: dumps(value) for key, value in dict.items(self)}

    @property
    def has_content(self) -> bool:
        """Worth storing: some data, or a user."""
        return dict.__len__(self) > 0 or self._user_id is not None
