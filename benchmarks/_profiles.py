"""pyinstrument profiles of benchmark cases: a text tree, an HTML page and the top functions by own time."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._harness import Case


def _own_times(frame: Any, into: dict[tuple[str, str], float]) -> None:
    """Sum each function's own time (its time less its real children's) over the whole tree;
    pyinstrument's synthetic ``[self]`` leaves count as their parent's own time."""
    real = [c for c in frame.children if not c.is_synthetic_leaf]
    own = frame.time - sum(c.time for c in real)
    key = (str(frame.function), str(frame.file_path_short or ""))
    into[key] = into.get(key, 0.0) + own
    for child in real:
        _own_times(child, into)


def top_functions(session: Any, count: int = 25) -> list[dict[str, Any]]:
    root = session.root_frame()
    if root is None:
        return []
    totals: dict[tuple[str, str], float] = {}
    _own_times(root, totals)
    total = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return [
        {"function": fn, "file": path, "seconds": round(t, 4), "percent": round(100 * t / total, 1)}
        for (fn, path), t in ranked
    ]


def profile_cases(cases: Sequence[Case], folder: Path, seconds: float, html: bool = False) -> dict[str, Any]:
    """Run each case for about ``seconds`` under pyinstrument; write ``<case>.txt``, ``-top.json`` (and ``.html``)."""
    from pyinstrument import Profiler

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for case in cases:
        case.run(200)  # warm
        started = time.perf_counter_ns()
        case.run(200)
        per_request = max(1, (time.perf_counter_ns() - started) // 200)
        requests = max(200, int(seconds * 1e9 / per_request))
        prepare, fire = getattr(case.run, "prepare", None), getattr(case.run, "fire", None)
        prepared = prepare(requests) if prepare is not None else None  # login/logout: seed outside the profile
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        if fire is not None:
            fire(prepared)
        else:
            case.run(requests)
        session = profiler.stop()
        name = f"{case.contender.replace(':', '-').replace('+', '_')}-{case.scenario}"
        text = folder / f"{name}.txt"
        text.write_text(profiler.output_text(unicode=True, color=False, show_all=False), encoding="utf-8")
        page = folder / f"{name}.html"
        if html:  # 5-15 MB each: not kept with the results
            page.write_text(profiler.output_html(), encoding="utf-8")
        top = top_functions(session)
        (folder / f"{name}-top.json").write_text(json.dumps(top, indent=1) + "\n", encoding="utf-8")
        out[name] = {"requests": requests, "text": str(text), "html": str(page) if html else None, "top": top}
    return out
