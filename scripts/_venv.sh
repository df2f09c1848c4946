# Sourced by the scripts: make .venv with one profile of dependencies, once per change of pyproject.toml.
# `source _venv.sh demo`: what the FastAPI shop needs to run from the checkout (the `demo` extra);
# `source _venv.sh dev` (the default): the project, editable, with everything for lint, types, tests
# and benchmarks (the `dev` extra), which also satisfies the demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
profile=${1:-dev}
case "$profile" in
  demo) extras=demo; check="import session_mw, fastapi, uvicorn, jinja2" ;;
  dev) extras=dev; check="import session_mw, starlette, flask, redis, uvicorn, pytest" ;;
  *) echo "_venv.sh: unknown profile $profile (demo or dev)" >&2; exit 2 ;;
esac

fresh() { [ -f ".venv/.session_mw-$1" ] && [ ! pyproject.toml -nt ".venv/.session_mw-$1" ]; }

install() {
  local pip
  if .venv/bin/python -c "import pip" 2>/dev/null; then
    pip=(.venv/bin/python -m pip)
  elif [ "$profile" = demo ] && "$PY" -m pip --python .venv/bin/python --version; then
    pip=("$PY" -m pip --python .venv/bin/python)  # pip >= 22.3 from outside: no pip of its own to install
  else
    .venv/bin/python -m ensurepip --upgrade || return 1
    pip=(.venv/bin/python -m pip)
  fi
  if [ "$profile" = dev ]; then
    "${pip[@]}" install "${pip_flags[@]}" --upgrade pip || return 1
  fi
  local reqs=() line listed
  if [ "$profile" = demo ] && listed=$(.venv/bin/python scripts/_extra.py demo); then
    # the demo runs from the checkout: its requirements only, no build of session_mw itself
    while IFS= read -r line; do reqs+=("$line"); done <<<"$listed"
    "${pip[@]}" install "${pip_flags[@]}" "${reqs[@]}"
  else
    "${pip[@]}" install "${pip_flags[@]}" -e ".[$extras]"
  fi
}

if ! fresh dev && { [ "$profile" = dev ] || ! fresh demo; }; then
  log=.venv/install.log
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv --without-pip .venv  # install() adds pip when it needs one of its own (seconds)
  fi
  echo "installing the $profile dependencies of session_mw into .venv (log: $log)" >&2
  pip_flags=(--disable-pip-version-check)
  if [ "$profile" = demo ]; then
    # no .pyc for the whole dependency tree up front: the shop compiles what it imports, once
    pip_flags+=(--no-compile)
  fi
  if ! install >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "installing failed; the whole log is in $log" >&2
    exit 1
  fi
  .venv/bin/python -c "$check"
  touch ".venv/.session_mw-$profile"
fi
export PATH="$PWD/.venv/bin:$PATH"
