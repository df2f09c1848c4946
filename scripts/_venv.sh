# Sourced by the scripts: make .venv with the project and its dev extras, once per change of pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.session_mw-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing session_mw and its dev dependencies into .venv (log: .venv/install.log)" >&2
  log=.venv/install.log
  if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
         && .venv/bin/python -m pip install --disable-pip-version-check -e ".[dev]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "installing failed; the whole log is in $log" >&2
    exit 1
  fi
  .venv/bin/python -c "import session_mw, starlette, flask, redis, uvicorn, pytest"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
