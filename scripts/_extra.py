"""Print the requirements of one extra of pyproject.toml, one a line, with the core dependencies.

``_venv.sh demo`` installs these instead of the project: the demo runs from the checkout, so
building session_mw itself (setuptools in an isolated build environment) would only cost time.
Needs ``tomllib`` (Python >= 3.11); without it this exits 1 and ``_venv.sh`` installs the project.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extra: str) -> list[str]:
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    with_extras = re.compile(r"\s*([A-Za-z0-9._-]+)\s*\[([^\]]*)\]\s*")
    found: list[str] = list(project.get("dependencies", []))
    todo, seen = [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in extras:
            raise SystemExit(f"_extra.py: pyproject.toml has no extra {name!r}")
        for requirement in extras[name]:
            match = with_extras.fullmatch(requirement)
            if match and _canonical(match.group(1)) == _canonical(project["name"]):
                todo.extend(part.strip() for part in match.group(2).split(","))
            elif requirement not in found:
                found.append(requirement)
    return found


if __name__ == "__main__":
    try:
        import tomllib  # noqa: F401
    except ImportError:
        raise SystemExit(1) from None
    print("\n".join(requirements(Path(__file__).resolve().parents[1] / "pyproject.toml", sys.argv[1])))
