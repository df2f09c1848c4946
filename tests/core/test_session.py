from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from session_mw import Session
from session_mw.serializers import JSONSerializer

DUMPS = JSONSerializer().dumps


def loaded(data: dict[str, Any]) -> Session:
    return Session(data, loaded={k: DUMPS(v) for k, v in data.items()}, new=False)


def test_it_is_a_real_dict() -> None:
    s = loaded({"a": 1, "cart": ["x"]})
    assert isinstance(s, dict)
    assert json.loads(json.dumps(s)) == {"a": 1, "cart": ["x"]}
    assert dict(s) == {"a": 1, "cart": ["x"]} and s == {"a": 1, "cart": ["x"]}


def test_reads_mark_accessed_but_not_modified() -> None:
    s = loaded({"a": 1})
    assert not s.accessed
    assert s.get("missing") is None
    assert "a" in s and s["a"] == 1
    assert s.accessed and not s.modified
    assert s.changes(DUMPS) == ({}, ())


def test_every_mutator_is_a_change() -> None:
    mutators: tuple[Callable[[Session], object], ...] = (
        lambda s: s.__setitem__("b", 2),
        lambda s: s.__delitem__("a"),
        lambda s: s.pop("a"),
        lambda s: s.popitem(),
        lambda s: s.setdefault("b", []),
        lambda s: s.update(b=2),
        lambda s: s.__ior__({"b": 2}),
        lambda s: s.clear(),
    )
    for mutate in mutators:
        s = loaded({"a": 1})
        mutate(s)
        assert s.modified, mutate


def test_nested_mutation_is_found_by_encoding() -> None:
    s = loaded({"cart": ["apple"], "other": {"x": 1}})
    s["cart"].append("pear")
    changed, removed = s.changes(DUMPS)
    assert changed == {"cart": b'["apple","pear"]'} and removed == ()


def test_only_changed_keys_and_removals_are_reported() -> None:
    s = loaded({"a": 1, "b": 2, "c": 3})
    s["a"] = 1  # same value: no write
    s["b"] = 20
    del s["c"]
    assert s.changes(DUMPS) == ({"b": b"20"}, ("c",))


def test_user_change_regenerates_and_repr_shows_no_secret() -> None:
    s = loaded({})
    s.user_id = "alice"
    assert s.regenerate_requested and s.user_id == "alice"
    assert "alice" in repr(s)
    t = loaded({})
    t.user_id = None  # no change, no regeneration
    assert not t.regenerate_requested


def test_invalidate_clears_everything() -> None:
    s = loaded({"a": 1})
    s.user_id = "bob"
    s.invalidate()
    assert s.invalidated and dict(s) == {} and s.user_id is None
