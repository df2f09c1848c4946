"""The two loops that run a plan: one per I/O model, and the only sync/async pair in the package.

A plan is a generator: it yields an operation, receives its result (or has the operation's
exception thrown into it), and returns its answer. Everything a plan decides is written
once; these loops only carry operations to ``perform`` and results back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")
Plan = Generator[Any, Any, T]


def run(plan: Plan[T], perform: Callable[[Any], Any]) -> T:
    """Drive ``plan`` with a blocking ``perform``."""
    try:
        step = next(plan)
        while True:
            try:
                result = perform(step)
            except Exception as exc:  # the plan decides what a failure means
                step = plan.throw(exc)
            else:
                step = plan.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def run_async(plan: Plan[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
    """Drive ``plan`` with an awaitable ``perform``."""
    try:
        step = next(plan)
        while True:
            try:
                result = await perform(step)
            except Exception as exc:
                step = plan.throw(exc)
            else:
                step = plan.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
