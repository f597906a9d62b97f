"""Start a private Redis Cluster (real redis-server processes) for tests and bench.

`RedisCluster(masters=3, replicas=1)` runs 6 redis-server processes on free loopback ports, each in
its own subdirectory of one temp dir (its nodes.conf lives there), joins them with
`redis-cli --cluster create` and waits until every node reports cluster_state:ok, all 16384 slots
are served and every master has its replicas connected. Nothing here touches a Redis it did not start.

Roles are read live from CLUSTER NODES: after a failover the promoted replica is a master, and a
restarted old master rejoins as a replica of it (same dir, same nodes.conf, same node id).
Every wait loop is bounded twice: by a number of polls and by a deadline.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis
import redis.cluster

SLOTS = 16384
POLL = 0.05  # seconds between two looks at the cluster


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports: all sockets are held open until every port is picked."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(n):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def cluster_support() -> str | None:
    """None if this machine can run the harness, else the reason it cannot (for pytest.skip)."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install redis-server)"
    out = subprocess.run(["redis-server", "--version"], check=False, capture_output=True, text=True, timeout=10).stdout
    version = next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), "0")
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < 7:  # --cluster-port (bus port not tied to port + 10000) and CLUSTER SHARDS came in 7.0
        return f"redis-server {version} is older than 7.0"
    return None


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES, as one node sees it."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @classmethod
    def parse(cls, line: str) -> ClusterNode:
        fields = line.split()
        address = fields[1].split("@", 1)[0]  # ip:port@cport[,hostname]
        slots: list[tuple[int, int]] = []
        for spec in fields[8:]:
            if spec.startswith("["):  # [slot->-id] / [slot-<-id]: a migration in progress, not owned
                continue
            first, _, last = spec.partition("-")
            slots.append((int(first), int(last or first)))
        return cls(id=fields[0], port=int(address.rsplit(":", 1)[1]), flags=frozenset(fields[2].split(",")),
                   master_id=None if fields[3] == "-" else fields[3], slots=tuple(slots))


class RedisCluster:
    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 timeout: float = 30, extra: Sequence[str] = ()) -> None:
        reason = cluster_support()
        if reason is not None:
            raise RuntimeError(reason)
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.extra = tuple(extra)  # more redis-server arguments for every node
        count = masters * (1 + replicas)
        picked = free_ports(2 * count)
        self.ports = picked[:count]
        self.bus_ports = dict(zip(self.ports, picked[count:]))  # --cluster-port: not port + 10000 (<= 65535)
        self.dir = Path(tempfile.mkdtemp(prefix="gms-redis-cluster-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._served: dict[int, tuple[tuple[int, int], ...]] = {}  # slots a master served when kill() hit it
        try:
            for port in self.ports:
                self.start(port)
            self._create(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.close()  # no redis-server left behind when creation fails halfway
            raise
        self.first_master = self.masters()[0][0]

    # -- processes ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The first master at creation: a cluster client discovers the rest from it (see client())."""
        return f"redis://127.0.0.1:{self.first_master}"

    def node_dir(self, port: int) -> Path:
        return self.dir / str(port)

    def start(self, port: int) -> None:
        """Start (or restart) the node on port with its own dir: nodes.conf there keeps its id and peers."""
        if port in self.procs:
            raise RuntimeError(f"node {port} is already running")
        path = self.node_dir(port)
        path.mkdir(exist_ok=True)
        with open(path / "stderr.log", "ab") as out:
            self.procs[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(path),
                 "--logfile", str(path / "redis.log"), "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-port", str(self.bus_ports[port]),
                 "--repl-diskless-sync-delay", "0",  # default 5 s: every (re)joining replica would wait that long
                 *self.extra],
                cwd=path, stdout=subprocess.DEVNULL, stderr=out,  # errors before the logfile opens
            )
        self._until(lambda: self._ping(port), 10, f"node {port} did not answer PING")

    def kill(self, port: int) -> None:
        """SIGKILL the node: no shutdown, no goodbye to its peers (what a crash or a lost host looks like)."""
        proc = self.procs.pop(port)
        with contextlib.suppress(redis.RedisError):
            for master, slots in self.masters():
                if master == port:
                    self._served[port] = tuple(slots)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again from its dir: it rejoins, and if its slots moved, as a replica.

        Restart a killed master only after wait_failover(): nodes keep no data (no RDB, no AOF), so a
        master back before its replica is promoted still owns its slots, empty, and the replica resyncs
        that empty dataset."""
        self.start(port)

    def running(self) -> list[int]:
        return [p for p in self.ports if p in self.procs and self.procs[p].poll() is None]

    def stop(self) -> None:
        for port, proc in list(self.procs.items()):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            del self.procs[port]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clients -----------------------------------------------------------------------------------

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (short timeouts: a killed node must not hang a wait loop)."""
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)

    def client(self, **kwargs: object) -> redis.cluster.RedisCluster:
        """A redis-py cluster client with every node as a startup node, so any one of them may be down."""
        nodes = [redis.cluster.ClusterNode("127.0.0.1", p) for p in self.ports]  # type: ignore[no-untyped-call]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)  # type: ignore[arg-type]

    def flushall(self) -> None:
        """FLUSHALL on every current master (replicas follow): only our own nodes are touched."""
        for port, _ in self.masters():
            with self.node(port) as client:
                client.flushall()

    # -- topology, read live -----------------------------------------------------------------------

    def nodes(self, port: int | None = None) -> list[ClusterNode]:
        """CLUSTER NODES as seen by port (default: the first running node that answers)."""
        if port is not None:
            with self.node(port) as client:
                text = client.execute_command("CLUSTER", "NODES")  # two words: raw text, no redis-py callback
            text = text.decode() if isinstance(text, bytes) else str(text)
            return [ClusterNode.parse(line) for line in text.splitlines() if line.strip()]
        error: Exception = RuntimeError("no node is running")
        for p in self.running():
            try:
                return self.nodes(p)
            except redis.RedisError as exc:
                error = exc
        raise error

    def masters(self, port: int | None = None) -> list[tuple[int, list[tuple[int, int]]]]:
        """(port, slot ranges) of every master that serves slots, by first slot."""
        owners = [n for n in self.nodes(port) if n.is_master and n.slots and "fail" not in n.flags]
        return [(n.port, list(n.slots)) for n in sorted(owners, key=lambda n: n.slots[0][0])]

    def replicas_of(self, master_port: int) -> list[int]:
        view = self.nodes()
        ids = {n.port: n.id for n in view}
        return sorted(n.port for n in view if n.master_id == ids.get(master_port) and not n.is_master
                      and not n.failing)

    def replica_of(self, master_port: int) -> int:
        found = self.replicas_of(master_port)
        if not found:
            raise LookupError(f"node {master_port} has no replica")
        return found[0]

    def node_for_slot(self, slot: int) -> int:
        for port, ranges in self.masters():
            if any(first <= slot <= last for first, last in ranges):
                return port
        raise LookupError(f"slot {slot} is not served")

    def node_for_key(self, key: str | bytes) -> int:
        with self.node(self.running()[0]) as client:
            return self.node_for_slot(int(client.execute_command("CLUSTER KEYSLOT", key)))

    # -- waits -------------------------------------------------------------------------------------

    def wait_ok(self, timeout: float = 30) -> None:
        """Every running node: cluster_state:ok, all slots ok, the same slot map, no running peer flagged
        failing, replicas linked to their master; with every node running, each master has all its replicas."""
        self._until(self._healthy, timeout, "cluster did not become ok")

    def wait_failover(self, old_master_port: int, timeout: float = 30) -> int:
        """Wait until the slots old_master_port served (when kill() hit it) are served by another node and
        every running node reports cluster_state:ok; answers that node's port."""
        served = self._served.get(old_master_port)
        if not served:
            raise ValueError(f"node {old_master_port} served no slots when it was killed")

        def moved() -> bool:
            views = self._views()
            return views is not None and all(
                not any(n.port == old_master_port and n.slots for n in view) for view in views.values())

        self._until(moved, timeout, f"slots of {old_master_port} did not move to another node")
        return self.node_for_slot(served[0][0])

    def _views(self) -> dict[int, list[ClusterNode]] | None:
        """CLUSTER NODES of every running node if each one is ok with all slots and they agree on owners."""
        views: dict[int, list[ClusterNode]] = {}
        try:
            for port in self.running():
                with self.node(port) as client:
                    info = client.cluster("INFO")
                if (info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != SLOTS
                        or int(info.get("cluster_known_nodes", 0)) != len(self.ports)):
                    return None
                views[port] = self.nodes(port)
        except redis.RedisError:
            return None
        maps = {tuple((n.port, n.slots) for n in sorted(view, key=lambda n: n.port) if n.is_master and n.slots)
                for view in views.values()}
        return views if len(maps) == 1 else None

    def _healthy(self) -> bool:
        views = self._views()
        if views is None:
            return False
        live = set(self.running())
        view = next(iter(views.values()))
        if any(n.port in live and n.failing for v in views.values() for n in v):
            return False
        owners = [n for n in view if n.is_master and n.slots]
        if len(owners) != self.n_masters:
            return False
        by_id = {n.id: n for n in view}
        try:
            for n in view:
                if n.port not in live:
                    continue
                with self.node(n.port) as client:
                    repl = client.info("replication")
                if n.is_master:
                    linked = [r for r in view if r.master_id == n.id and r.port in live]
                    if int(repl.get("connected_slaves", 0)) != len(linked):
                        return False
                    if live == set(self.ports) and n.slots and len(linked) != self.n_replicas:
                        return False
                elif repl.get("master_link_status") != "up" or n.master_id not in by_id:
                    return False
        except redis.RedisError:
            return False
        return True

    def _create(self, timeout: float) -> None:
        command = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                   "--cluster-replicas", str(self.n_replicas), "--cluster-yes"]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _ping(self, port: int) -> bool:
        proc = self.procs[port]
        if proc.poll() is not None:
            logs = [self.node_dir(port) / name for name in ("stderr.log", "redis.log")]
            tail = "".join(log.read_text(errors="replace")[-2000:] for log in logs if log.exists())
            raise RuntimeError(f"redis-server on {port} exited with {proc.returncode}:\n{tail}")
        try:
            with self.node(port) as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def _until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / POLL) + 1):
            if check():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
        raise TimeoutError(f"{what} within {timeout} s")

    def logs(self) -> Iterator[tuple[int, str]]:
        """(port, log text) of every node, for a failing test's report."""
        for port in self.ports:
            log = self.node_dir(port) / "redis.log"
            if log.exists():
                yield port, log.read_text(errors="replace")
