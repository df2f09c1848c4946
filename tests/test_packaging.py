"""What pyproject.toml promises: the license file shipped in the wheel, the demo extra enough for the shop.

Building a wheel here would be slow; the wheel itself was checked by hand (``pip wheel . --no-deps``
puts ``session_mw-*.dist-info/licenses/LICENSE`` in it and ``License-File: LICENSE`` in METADATA).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def project() -> dict[str, Any]:
    data: dict[str, dict[str, Any]] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]


def test_the_license_files_exist_and_say_mit() -> None:
    meta = project()
    assert meta["license"] == "MIT"
    assert meta["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the session_mw authors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def _extra_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_extra", ROOT / "scripts" / "_extra.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_the_demo_extra_has_what_the_fastapi_shop_imports_and_dev_has_the_demo() -> None:
    requirements = _extra_script().requirements
    demo = _names(requirements(ROOT / "pyproject.toml", "demo"))
    assert {"werkzeug", "fastapi", "starlette", "anyio", "uvicorn", "jinja2", "python-multipart"} <= demo
    assert not {"pytest", "mypy", "ruff", "hypothesis", "flask", "gunicorn"} & demo  # no toolchain
    assert demo <= _names(requirements(ROOT / "pyproject.toml", "dev"))
