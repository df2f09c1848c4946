"""The Flask door's value encoding: Flask's tagged JSON where plain JSON would lose the type.

Flask apps keep ``Markup`` (flashed HTML), ``bytes``, ``datetime``, ``UUID`` and ``tuple`` in
their sessions; Flask's tagger carries these. A value holding one of them, at any depth, is
stored as ``TAGGED_PREFIX`` followed by the canonical JSON of Flask's tagged structure; every
other value is stored in the canonical plain encoding, byte for byte what the ASGI and WSGI
doors write. Reading, only a marked value is untagged: the marker, never the data, says which,
so a plain ``{" m": "<img ...>"}`` written by another app stays a dict and is never trusted HTML.

The ASGI and WSGI doors read a marked value as its tagged structure, as plain data. Datetimes
come back as Flask's tagger returns them: timezone-aware UTC, whole seconds.
"""

from __future__ import annotations

from typing import Any

try:
    from flask.json.tag import PassDict, PassList, TagDict, TaggedJSONSerializer
except ImportError as exc:
    raise ImportError("session_mw.contrib.flask_serializer needs Flask: pip install 'session_mw[flask]'") from exc

from ..errors import ValueNotDecodable, ValueNotStorable
from ..serializers import MAX_DEPTH, TAGGED_PREFIX, JSONSerializer, default_serializer

_NEVER_TAGGED = frozenset({str, int, float, bool, type(None)})
_CONTAINER_TAGS = (TagDict, PassDict, PassList)  # a plain dict or list: no reason to tag it


class FlaskSerializer:
    """Plain values as in the other doors; marked, tagged JSON for what only Flask's tagger carries.

    Exactly as strict as the plain encoding: a type neither can carry raises ``ValueNotStorable``,
    unreadable bytes ``ValueNotDecodable``, and the tagged form counts towards ``MAX_DEPTH``.
    """

    def __init__(self, plain: JSONSerializer | None = None) -> None:
        self._plain = plain if plain is not None else default_serializer()
        self._tagger = TaggedJSONSerializer()

    def dumps(self, value: Any) -> bytes:
        if not self._needs_tags(value, MAX_DEPTH):
            return self._plain.dumps(value)
        try:
            tagged = self._tagger.tag(value)
        except RecursionError:
            raise ValueNotStorable(f"nested deeper than {MAX_DEPTH} lists and dicts") from None
        except (TypeError, ValueError) as exc:
            raise ValueNotStorable(f"Flask's tagger cannot tag the value ({type(exc).__name__})") from None
        return TAGGED_PREFIX + self._plain.dumps(tagged)

    def loads(self, data: bytes) -> Any:
        value = self._plain.loads(data)  # reads a marked value's tagged structure
        if not data.startswith(TAGGED_PREFIX):
            return value
        try:
            return self._untag(value)
        except ValueNotDecodable:
            raise
        except Exception as exc:  # a tag's decoder choking on stored data: corrupt, not a bug here
            raise ValueNotDecodable(f"a tagged value does not untag ({type(exc).__name__})") from None

    def _needs_tags(self, value: Any, room: int) -> bool:
        """Whether Flask's tagger would change ``value`` beyond escaping tag-like dict keys.

        Follows the tagger's own order of checks. It gives up on a container past ``room``
        levels: the plain encoder then refuses the value as too deep.
        """
        if type(value) in _NEVER_TAGGED:
            return False
        for tag in self._tagger.order:
            if tag.check(value):
                break
        else:
            return False  # nothing Flask tags: the plain encoder accepts or refuses it
        if not isinstance(tag, _CONTAINER_TAGS):
            return True
        if room == 0:
            return False  # a container too deep: the plain encoder refuses it
        items = value.values() if isinstance(value, dict) else value
        return any(self._needs_tags(item, room - 1) for item in items)

    def _untag(self, value: Any) -> Any:
        """Flask's untagging, innermost first as a JSON object hook would run (depth is bounded)."""
        if isinstance(value, list):
            return [self._untag(item) for item in value]
        if not isinstance(value, dict):
            return value
        untagged = self._tagger.untag({key: self._untag(item) for key, item in value.items()})
        if untagged is None:  # Flask's date parser answers None for a date it cannot read
            raise ValueNotDecodable("a tagged value does not untag")
        return untagged
