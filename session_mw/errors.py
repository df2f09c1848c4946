"""One exception root, so an app can catch everything session_mw raises with one clause."""

from __future__ import annotations


class SessionError(Exception):
    """Base class of every error session_mw raises."""


class ConfigError(SessionError, ValueError):
    """A setting is missing, malformed or unsafe; the message names the setting."""


class StoreError(SessionError):
    """The backing store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the request may be retried later.

    ``status_hint`` is the HTTP status the middlewares answer with.
    """

    status_hint = 503


class SessionConflict(SessionError):
    """The session was changed or removed by another request while this one ran."""


class SessionBusy(SessionConflict):
    """The session stayed locked by another request for longer than ``lock_timeout``."""


class ValueNotStorable(SessionError, TypeError):
    """A session value (or the user id) has no canonical encoding. The message says why, never what the value was."""


class ValueNotDecodable(SessionError, ValueError):
    """Stored bytes are not a value session_mw could have written: bad UTF-8 or JSON, NaN, too deep."""


class SessionTooLarge(SessionError, ValueError):
    """The session's encoded data is larger than ``max_session_bytes``; nothing was written."""


class SessionNotLoaded(RuntimeError):
    """With ``lazy_load``, the app used ``request.session`` before ``await load_session(request)``.

    A programming error, not a session failure (so not a ``SessionError``): the message names the fix.
    """
