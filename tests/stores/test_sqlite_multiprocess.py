"""Several real processes on one SQLite file at once: nothing is lost, nothing is resurrected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from session_mw.stores.base import Create, Lifetime, Load, SessionsOf
from session_mw.stores.sqlite import SQLiteStore
from session_mw.testing import meta

ROOT = Path(__file__).resolve().parents[2]
LIFE = Lifetime(600.0, 3600.0, 60.0)
WORKERS = 4
UPDATES = 50
CREATES = 25

# Each worker waits for the go file, then interleaves: an update of its own key of the shared
# session, a create of a session of its own, and a load with a touch always due (so reads
# have to upgrade to writes while the others write).
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from session_mw.stores.base import Create, Lifetime, Load, Update
    from session_mw.stores.sqlite import SQLiteStore
    from session_mw.testing import meta

    path, go, n, updates, creates = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    shared = "0" * 64
    store = SQLiteStore(path, gc_every=7)
    deadline = time.monotonic() + 20
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.005)
    failed_updates = 0
    life, always = Lifetime(600.0, 3600.0, 60.0), Lifetime(600.0, 3600.0, 0.0)
    for i in range(max(updates, creates)):
        if i < updates:
            if not store.execute(Update(shared, life, {f"w{n}": str(i).encode()})):
                failed_updates += 1
        if i < creates:
            own = f"{n + 1:08x}{i:056x}"
            store.execute(Create(own, meta(time.time(), user=f"user{n}"), {"n": str(i).encode()}, life))
        if store.execute(Load(shared, always)) is None:
            failed_updates += 1
    store.close()
    print(json.dumps({"failed": failed_updates}))
    """
)


def test_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    go = tmp_path / "go"
    shared = "0" * 64
    store = SQLiteStore(db)
    store.execute(Create(shared, meta(time.time(), user="shared"), {"start": b"1"}, LIFE))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), str(go), str(n), str(UPDATES), str(CREATES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for n in range(WORKERS)
    ]
    time.sleep(0.5)  # let them all import and open the file before the start signal
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert results == [{"failed": 0}] * WORKERS

    record = store.execute(Load(shared, LIFE))
    assert record is not None
    assert record.data == {"start": b"1", **{f"w{n}": str(UPDATES - 1).encode() for n in range(WORKERS)}}
    for n in range(WORKERS):
        owned = sorted(d for d, _ in store.execute(SessionsOf(f"user{n}", LIFE)))
        assert owned == sorted(f"{n + 1:08x}{i:056x}" for i in range(CREATES))
        for i in range(CREATES):
            got = store.execute(Load(f"{n + 1:08x}{i:056x}", LIFE))
            assert got is not None and got.data == {"n": str(i).encode()}
    assert store.stats()["sessions"] == 1 + WORKERS * CREATES
    store.close()


FORKER = textwrap.dedent(
    """
    import os, sys, time
    from session_mw.stores.base import Create, Lifetime, Load, Update
    from session_mw.stores.sqlite import SQLiteStore
    from session_mw.testing import meta

    life = Lifetime(600.0, 3600.0, 60.0)
    store = SQLiteStore(sys.argv[1])
    store.execute(Create("a" * 64, meta(time.time()), {"who": b"parent"}, life))  # pools a connection
    children = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:  # like gunicorn --preload: the store was opened before the fork
            ok = store.execute(Update("a" * 64, life, {f"child{n}": b"1"}))
            ok = ok and store.execute(Load("a" * 64, life)) is not None
            store.close()
            os._exit(0 if ok else 1)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    record = store.execute(Load("a" * 64, life))
    store.close()
    print(codes, sorted(record.data))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_store_opened_before_fork_works_in_the_children(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", FORKER, str(tmp_path / "s.db")], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 0, 0] ['child0', 'child1', 'child2', 'who']"
