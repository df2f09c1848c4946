"""Real local Redis deployments for the tests: a Cluster and a Sentinel setup, from the Debian binaries.

Every process listens on a free loopback port and keeps nothing on disk beyond its own
temporary directory; nothing here touches a Redis the machine already runs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together, so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {timeout}s")


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate for 127.0.0.1: the servers' own, and the CA the clients trust."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> Tls:
        cert, key = directory / "cert.pem", directory / "key.pem"
        request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        subprocess.run(
            ["openssl", *request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        return cls(cert, key)

    def server_args(self, port: int) -> list[str]:
        files = [
            "--tls-cert-file",
            str(self.cert),
            "--tls-key-file",
            str(self.key),
            "--tls-ca-cert-file",
            str(self.cert),
        ]
        peers = ["--tls-auth-clients", "no", "--tls-cluster", "yes", "--tls-replication", "yes"]
        return ["--port", "0", "--tls-port", str(port), *files, *peers]

    def cli_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.cert)]


def _cli(port: int, *args: str, timeout: float = 10.0, tls: Tls | None = None) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *(tls.cli_args() if tls else []), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout.strip()


def missing_binaries(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


@dataclass
class Node:
    """One redis-server (or sentinel) process; tests may kill, pause and restart it."""

    port: int
    workdir: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    tls: Tls | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", *self.args], cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: self.cli("PING") == "PONG", f"redis on port {self.port} did not answer")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the node holds its connections open and answers nothing (a hung primary)."""
        assert self.proc is not None
        self.proc.send_signal(19)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(18)

    def cli(self, *args: str) -> str:
        return _cli(self.port, *args, tls=self.tls)


def _server_args(port: int, *extra: str, tls: Tls | None = None) -> list[str]:
    listen = tls.server_args(port) if tls else ["--port", str(port)]
    return [*listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]


class _Running:
    """A deployment is a context manager: stopped, whatever happened, when the block ends."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_D = TypeVar("_D", bound=_Running)


@dataclass
class Cluster(_Running):
    """Three primaries, each with ``replicas`` replicas, made by ``redis-cli --cluster create``."""

    nodes: list[Node] = field(default_factory=list)
    tls: Tls | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])
        if self.tls is None:
            return f"redis+cluster://{hosts}"
        return f"rediss+cluster://{hosts}?ssl_ca_certs={self.tls.cert}"

    @classmethod
    def start(cls, replicas: int = 0, tls: bool = False) -> Cluster:
        root = Path(tempfile.mkdtemp(prefix="session_mw-cluster-"))
        cluster = cls(tls=Tls.make(root) if tls else None)
        count = 3 * (1 + replicas)
        ports = free_ports(2 * count)  # each node's own port, and its cluster bus port
        for port, bus in zip(ports[:count], ports[count:], strict=True):
            workdir = root / str(port)
            workdir.mkdir()
            node = Node(
                port,
                workdir,
                _server_args(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    str(bus),
                    tls=cluster.tls,
                ),
                tls=cluster.tls,
            )
            node.start()
            cluster.nodes.append(node)
        addresses = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        tls_cli = cluster.tls.cli_args() if cluster.tls else []
        create = ["--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"]
        subprocess.run(
            ["redis-cli", *tls_cli, *create],
            capture_output=True,
            check=True,
            timeout=60,
        )
        _wait(
            lambda: all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in cluster.nodes),
            "the cluster did not reach cluster_state:ok",
        )
        if replicas:  # a replica that has not synced yet acknowledges no WAIT
            _wait(
                lambda: all(
                    "master_link_status:up" in info
                    for info in (n.cli("INFO", "replication") for n in cluster.nodes)
                    if "role:slave" in info
                ),
                "the replicas did not sync",
            )
        return cluster

    def primary_ports(self) -> list[int]:
        return [n.port for n in self.nodes if "role:master" in n.cli("INFO", "replication")]

    def failed_over(self, victim: Node) -> bool:
        """A live node's view: ``victim`` is marked failed and three healthy primaries own the slots."""
        witness = next(n for n in self.nodes if n is not victim and n.proc is not None)
        rows = [line.split() for line in witness.cli("CLUSTER", "NODES").splitlines() if line.strip()]
        victim_failed = any(r[1].startswith(f"127.0.0.1:{victim.port}@") and "fail" in r[2].split(",") for r in rows)
        serving = [r for r in rows if "master" in r[2] and "fail" not in r[2] and len(r) > 8]
        return victim_failed and len(serving) == 3

    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and "role:master" in n.cli("INFO", "replication")]

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@dataclass
class Sentinels(_Running):
    """One primary, one replica and three sentinels watching them as ``service``."""

    primary: Node
    replica: Node
    sentinels: list[Node]
    service: str = "sessions"
    tls: Tls | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        if self.tls is None:
            return f"redis+sentinel://{hosts}/{self.service}/0"
        return f"rediss+sentinel://{hosts}/{self.service}/0?ssl_ca_certs={self.tls.cert}"

    @classmethod
    def start(cls, service: str = "sessions", tls: bool = False) -> Sentinels:
        root = Path(tempfile.mkdtemp(prefix="session_mw-sentinel-"))
        certs = Tls.make(root) if tls else None
        p_port, r_port, *s_ports = free_ports(5)
        dirs = {}
        for port in (p_port, r_port, *s_ports):
            dirs[port] = root / str(port)
            dirs[port].mkdir()
        primary = Node(p_port, dirs[p_port], _server_args(p_port, tls=certs), tls=certs)
        primary.start()
        follow = ["--replicaof", "127.0.0.1", str(p_port)]
        replica = Node(r_port, dirs[r_port], _server_args(r_port, *follow, tls=certs), tls=certs)
        replica.start()
        _wait(lambda: "master_link_status:up" in replica.cli("INFO", "replication"), "the replica did not sync")
        sentinels = []
        for port in s_ports:
            conf = dirs[port] / "sentinel.conf"
            listen = f"port {port}\n" if certs is None else _sentinel_tls(port, certs)
            conf.write_text(
                f"{listen}bind 127.0.0.1\n"
                f"sentinel monitor {service} 127.0.0.1 {p_port} 2\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
                f"sentinel parallel-syncs {service} 1\n",
                encoding="utf-8",
            )
            node = Node(port, dirs[port], [str(conf), "--sentinel"], tls=certs)
            node.start()
            sentinels.append(node)
        deployment = cls(primary, replica, sentinels, service, certs)
        _wait(
            lambda: (
                all("num-other-sentinels" in s.cli("SENTINEL", "MASTER", service) for s in sentinels)
                and all(_known_sentinels(s, service) == 2 for s in sentinels)
            ),
            "the sentinels did not find each other",
        )
        return deployment

    def current_primary(self) -> Node:
        port = self.primary_port()
        return next(n for n in (self.primary, self.replica) if n.port == port)

    def primary_port(self) -> int:
        reply = self.sentinels[0].cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service).split()
        return int(reply[1])

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.primary]:
            node.kill()


def _sentinel_tls(port: int, certs: Tls) -> str:
    return (
        f"port 0\ntls-port {port}\ntls-cert-file {certs.cert}\ntls-key-file {certs.key}\n"
        f"tls-ca-cert-file {certs.cert}\ntls-auth-clients no\ntls-replication yes\n"
    )


def _known_sentinels(sentinel: Node, service: str) -> int:
    lines = sentinel.cli("SENTINEL", "MASTER", service).splitlines()
    for name, value in zip(lines[::2], lines[1::2], strict=False):
        if name == "num-other-sentinels":
            return int(value)
    return -1
