"""The apps ``bench_http`` serves with uvicorn and gunicorn: those of bench_asgi and bench_wsgi,
on the Redis named by ``SESSION_MW_BENCH_REDIS_URL``.

    uvicorn --factory benchmarks.http_apps:starlette_ours
    gunicorn 'benchmarks.http_apps:flask_ours()'
"""

from __future__ import annotations

import os
from typing import Any

from . import bench_asgi, bench_wsgi


def _url() -> str:
    return os.environ["SESSION_MW_BENCH_REDIS_URL"]


def starlette_ours() -> Any:
    return bench_asgi.build("ours+redis", _url()).app


def starlette_ours_cached() -> Any:
    return bench_asgi.build("ours+redis-cached", _url()).app


def starlette_cookie() -> Any:
    return bench_asgi.build("starlette-cookie", _url()).app


def flask_ours_cached() -> Any:
    return bench_wsgi.build("ours+redis-cached", _url()).app


def flask_cookie() -> Any:
    return bench_wsgi.build("flask-cookie", _url()).app


def starlette_starsessions() -> Any:
    return bench_asgi.build("starsessions+redis", _url()).app


def flask_ours() -> Any:
    return bench_wsgi.build("ours+redis", _url()).app


def flask_session() -> Any:
    return bench_wsgi.build("flask-session+redis", _url()).app


APPS = {
    ("uvicorn", "ours+redis"): "starlette_ours",
    ("uvicorn", "starsessions+redis"): "starlette_starsessions",
    ("uvicorn", "ours+redis-cached"): "starlette_ours_cached",
    ("uvicorn", "starlette-cookie"): "starlette_cookie",
    ("gunicorn", "ours+redis-cached"): "flask_ours_cached",
    ("gunicorn", "flask-cookie"): "flask_cookie",
    ("gunicorn", "ours+redis"): "flask_ours",
    ("gunicorn", "flask-session+redis"): "flask_session",
}
