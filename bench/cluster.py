"""Phase cluster: the service on a 3-master Redis Cluster (one replica each) beside one redis-server.

Both deployments run the same gunicorn settings and get the same traffic, one after the other:

- the God Mode load (bench/godmode_load.py) on each, each store emptied first: throughput, and
  Redis command µs per request summed over the masters (INFO commandstats, as redis_probe reads it);
- per-master balance under that load on the cluster: each master's keys (DBSIZE, read after it)
  and commands (commandstats calls during it) over the mean of the masters. The load's 12 humans
  are few: which partitions their names hash to decides the write spread. A second cluster run with
  `wide_humans` humans measures the spread the partition tags give when there are many;
- the POST, newest-page and frontend-poll wrk runs of the ratio phase, interleaved per round:
  req/s and Redis µs per request on each;
- from those costs, a paper estimate of what N masters carry (appends/s, active tabs): capacity().

Nothing here writes outside the two private stores; every wrk run and God Mode run is bounded.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from app.config import Settings

from . import godmode_load, ratio, redis_probe
from .servers import Gunicorn
from .wrk import Load, run_wrk

KINDS = ratio.KINDS  # post, get (newest 50), get_frontend (6 s back, 200 per page)
BALANCE_BAND = (0.8, 1.25)  # every master's share over the mean, as the issue asks
_runs = itertools.count(1)  # part of every posted id: ids never repeat within a store


@dataclass(frozen=True)
class Config:
    load: Load  # each wrk run
    rounds: int  # interleaved rounds of the six wrk runs
    godmode: godmode_load.Config
    wide_humans: int = 120  # humans in the balance-only God Mode run on the cluster
    # Ten times the humans, ten times the pair pollers: they poll every 3 s as the real frontend
    # does (not every 1 s), each human thinks longer between questions, and the 4 bots get longer
    # (still bounded) to answer what is pending when the humans stop.
    wide_poll_interval_s: float = 3.0
    wide_think_s: float = 2.0
    wide_drain_s: float = 45.0
    utilization: float = 0.7  # capacity: the share of one core a master is planned to use
    tab_poll_s: float = 3.0  # capacity: an active tab polls every 3 s (../shared/clients.md)
    capacity_masters: tuple[int, ...] = (1, 2, 3, 4, 6, 12)  # divisors of PARTITIONS=12: an even split


@dataclass
class Deployment:
    """One service under test and plain clients of every master behind it."""

    name: str
    app: Gunicorn
    settings: Settings  # what its workers load: REDIS_URL, REDIS_MODE
    masters: dict[int, redis.Redis]  # port -> client; standalone: its one server

    def snapshots(self) -> list[redis_probe.Snapshot]:
        return [redis_probe.snapshot(client) for client in self.masters.values()]

    def flush(self) -> None:
        """FLUSHALL on our own private servers (a cluster's replicas follow their masters)."""
        for client in self.masters.values():
            client.flushall()

    def dbsizes(self) -> list[int]:
        return [int(client.dbsize()) for client in self.masters.values()]


@dataclass(frozen=True)
class Measured:
    run: ratio.Measured  # every master's cost summed
    per_master: list[redis_probe.Cost]

    def as_dict(self) -> dict[str, Any]:
        return {**self.run.as_dict(), "per_master_calls": [c.service_calls() for c in self.per_master]}


def _measure(target: Deployment, load: Load, script: str, args: tuple[str, ...]) -> Measured:
    """As ratio.measure, with each master read on its own."""
    url = target.app.url + "/api/comments"
    if load.warmup_s > 0:
        run_wrk(url, script, args, duration_s=load.warmup_s, connections=load.connections, threads=load.threads)
    before, cpu_before = target.snapshots(), target.app.worker_cpu_s()
    result = run_wrk(url, script, args, duration_s=load.duration_s, connections=load.connections,
                     threads=load.threads)
    per_master = [redis_probe.cost(b, a) for b, a in zip(before, target.snapshots(), strict=True)]
    cpu_after = target.app.worker_cpu_s()
    workers = [cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after]
    return Measured(ratio.Measured(result, redis_probe.combined(per_master), workers), per_master)


def _fixture(kind: str, target: Deployment) -> ratio.Poll:
    """A fresh GET fixture in the target's store and its query, as ratio.prepare_poll (no ceiling copy)."""
    url, settings = target.settings.redis_url, target.settings
    if kind == "get":
        after, limit, cap = ratio.preload_poll_fixture(url, settings), ratio.POLL_SIZE, 0
    else:  # counted up to the ratio phase's cap, to show both stores saw as many messages since
        after, limit, cap = ratio.preload_frontend_fixture(url, settings), ratio.FRONTEND_LIMIT, ratio.CEILING_COPY_CAP
    poll, _ = ratio.capture_poll(target.app, after, limit, cap)
    return poll


def shares(values: list[float]) -> dict[str, Any]:
    """Each value over their mean, and the smallest and largest of those."""
    mean = statistics.fmean(values) if values else 0.0
    ratios = [round(v / mean, 3) if mean else None for v in values]
    known = [r for r in ratios if r is not None]
    return {"values": values, "ratio_to_mean": ratios, "min": min(known, default=None), "max": max(known, default=None),
            "within_band": bool(known) and BALANCE_BAND[0] <= min(known) and max(known) <= BALANCE_BAND[1]}


def _godmode(target: Deployment, traffic: godmode_load.Config) -> dict[str, Any]:
    """One God Mode run on an emptied store, with every master's cost and keys read around it."""
    target.flush()
    before = target.snapshots()
    summary = godmode_load.run(target.app.url, traffic)
    per_master = [redis_probe.cost(b, a) for b, a in zip(before, target.snapshots(), strict=True)]
    cost = redis_probe.combined(per_master)
    requests = sum(int(v["count"]) for v in summary["latency"].values()) + 1  # + the start marker
    summary.update({
        "requests": requests,
        "requests_per_s": round(requests / summary["elapsed_s"], 1) if summary["elapsed_s"] else None,
        **cost.figures(requests),
        "redis_usec_by_command": cost.breakdown(requests),
    })
    if len(per_master) > 1:
        summary["balance"] = _balance(target, per_master)
    return summary


def _balance(target: Deployment, per_master: list[redis_probe.Cost]) -> dict[str, Any]:
    return {
        "masters": list(target.masters),
        "keys": shares([float(n) for n in target.dbsizes()]),
        "commands": shares([float(c.service_calls()) for c in per_master]),
        # not in the target, shown beside it: where the Redis time and CPU went
        "command_usec": shares([float(sum(u for _c, u in c.commands.values())) for c in per_master]),
        "cpu": shares([round(c.cpu_s, 3) for c in per_master]),
    }


def _wrk_rounds(targets: list[Deployment], cfg: Config) -> dict[str, Any]:
    """ratio.run's rounds on the two deployments: each kind runs on standalone, then cluster."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {k: {t.name: [] for t in targets} for k in KINDS}
    queries: dict[str, dict[str, list[dict[str, Any]]]] = {k: {t.name: [] for t in targets} for k in ratio.GET_KINDS}
    last_write = {t.name: time.monotonic() for t in targets}
    for round_ in range(cfg.rounds):
        load = cfg.load if round_ == 0 else replace(cfg.load, warmup_s=0)  # the apps stay warm afterwards
        for target in targets:
            runs["post"][target.name].append(_measure(target, load, "post_comment.lua", (f"c{next(_runs)}",)).as_dict())
            last_write[target.name] = time.monotonic()
        for kind in ratio.GET_KINDS:
            for target in targets:
                if kind == "get_frontend":  # only the fixture after `after`: as in ratio.run
                    time.sleep(max(0.0, last_write[target.name] + ratio.FRONTEND_BACK_MS / 1000 - time.monotonic()))
                poll = _fixture(kind, target)
                last_write[target.name] = time.monotonic()
                queries[kind][target.name].append(poll.as_dict())
                runs[kind][target.name].append(_measure(target, load, "get_paths.lua", (poll.path,)).as_dict())
    out: dict[str, Any] = {"load": cfg.load.__dict__, "rounds": cfg.rounds, "queries": queries}
    for kind, by_name in runs.items():
        out[kind] = {name: ratio.median_run(each) for name, each in by_name.items()}
        per_round = [round(c["rps"] / s["rps"], 3) for s, c in zip(by_name["standalone"], by_name["cluster"],
                                                                       strict=True) if s["rps"]]
        out[kind]["cluster_rps_share"] = round(statistics.median(per_round), 3) if per_round else None
        out[kind]["cluster_rps_share_per_round"] = per_round
        calls = [sum(r["per_master_calls"][i] for r in by_name["cluster"]) for i in range(len(targets[1].masters))]
        out[kind]["cluster_calls_balance"] = shares([float(c) for c in calls])
    return out


def capacity(wrk: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """What N masters carry, on paper, from the measured Redis cost per request.

    An append is one script on the master of its partition: with PARTITIONS spread evenly, N
    masters share appends N ways. A poll reads every partition, one pipeline per master: its total
    cost grows with N by a per-master overhead, fitted from the two points measured (N = 1: the
    standalone server, N = 3: the cluster)."""
    u, per_s = cfg.utilization, 1e6
    out: dict[str, Any] = {
        "utilization": u,
        "tab_poll_s": cfg.tab_poll_s,
        "formula": {
            "appends_per_s(N)": "N × U × 1e6 / c_append",
            "c_poll(N)": "c_poll(1) + (N − 1) × d, d = max(0, (c_poll(3) − c_poll(1)) / 2)",
            "polls_per_s(N)": "N × U × 1e6 / c_poll(N)",
            "active_tabs(N)": "polls_per_s(N) × T",
            "mixed": "A × c_append + (tabs / T) × c_poll(N) ≤ N × U × 1e6",
            "where": (f"c = Redis µs per request summed over the masters (wrk medians), U = {u} of one core per "
                      f"master, T = {cfg.tab_poll_s} s between an active tab's polls, N a divisor of "
                      f"PARTITIONS=12 (beyond 12 masters no partition is left to spread)"),
        },
        "by_basis": {},
    }
    for basis, field in (("redis_cpu", "redis_cpu_us_per_request"), ("command", "redis_usec_per_request")):
        c_append = wrk["post"]["cluster"][field]
        polls = {}
        for kind in ratio.GET_KINDS:
            c1, c3 = wrk[kind]["standalone"][field], wrk[kind]["cluster"][field]
            polls[kind] = {"c_poll_1": c1, "c_poll_3": c3, "d_per_master": round(max(0.0, (c3 - c1) / 2), 2)}
        rows = []
        for n in cfg.capacity_masters:
            row: dict[str, Any] = {"masters": n,
                                   "appends_per_s": round(n * u * per_s / c_append) if c_append else None}
            for kind, p in polls.items():
                c_n = p["c_poll_1"] + (n - 1) * p["d_per_master"]
                row[f"{kind}_polls_per_s"] = round(n * u * per_s / c_n) if c_n else None
                row[f"{kind}_active_tabs"] = round(n * u * per_s / c_n * cfg.tab_poll_s) if c_n else None
            rows.append(row)
        out["by_basis"][basis] = {"field": field, "c_append": c_append, "polls": polls, "by_masters": rows,
                                  "per_master_appends_per_s_at_100pct": round(per_s / c_append) if c_append else None}
    return out


def run(standalone: Deployment, clustered: Deployment, cfg: Config) -> dict[str, Any]:
    targets = [standalone, clustered]
    out: dict[str, Any] = {
        "masters": {t.name: list(t.masters) for t in targets},
        "slots_per_master": REDIS_CLUSTER_HASH_SLOTS // len(clustered.masters),
        "godmode": {t.name: _godmode(t, cfg.godmode) for t in targets},
    }
    wide = replace(cfg.godmode, humans=cfg.wide_humans, think_s=cfg.wide_think_s,
                   poll_interval_s=cfg.wide_poll_interval_s, drain_s=max(cfg.godmode.drain_s, cfg.wide_drain_s))
    out["godmode_wide"] = _godmode(clustered, wide)
    for target in targets:
        target.flush()  # the wrk runs start from empty stores, as each other
    out["wrk"] = _wrk_rounds(targets, cfg)
    out["capacity"] = capacity(out["wrk"], cfg)
    return out
