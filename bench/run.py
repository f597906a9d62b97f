"""`make bench`: every benchmark of the message store in one run, on a private redis-server.

Phases, in order: ratio (ours vs the ceiling app and the bare framework, wrk), raw (the append
script alone, pipelined), profile (pyinstrument over in-process requests), godmode (bots, humans and
pollers over HTTP), keyspace (poll latency and memory at growing keyspaces, the seed's reads for
contrast), pollcost (Redis time of a frontend poll 500 vs 3,000 messages back), drift (timestamps vs
the wall clock after a burst of appends), claims (claim-next with 120 concurrent bots), cluster
(the God Mode load and the POST/poll wrk runs on a 3-master + 3-replica Redis Cluster beside this
redis-server: throughput, Redis µs per request, per-master balance, capacity of N masters on paper).
pollcost, drift, claims and cluster each start from an empty database.
About 10 minutes on 2 cores (the cluster phase ~4); --quick is a ~3 minute smoke run. Results go to bench/results/; a run of
some phases only writes over latest.json there too, so give it its own --out (the cluster phase's
own results: --phases cluster --out bench/results/cluster).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`make bench`): make `bench`, `app` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from app.config import Settings, load_settings
from bench import claims, cluster, drift, godmode_load, keyspace, pollcost, profile, ratio, raw_redis, report
from bench.bare_app import POLL_DIR_ENV
from bench.servers import BARE_APP, CEILING_APP, ROOT, SERVICE_APP, Gunicorn, RedisServer, start_gunicorn
from bench.wrk import Load
from tests.redis_cluster import RedisCluster, cluster_support

RESULTS = ROOT / "bench" / "results"
PHASES = ("ratio", "raw", "profile", "godmode", "keyspace", "pollcost", "drift", "claims", "cluster")
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"duration": 4.0, "rounds": 5, "warmup": 2.0, "godmode_duration": 40.0, "drain": 20.0,
             "keys": "1000,10000,100000", "keyspace_duration": 5.0, "seed_budget": 8.0,
             "raw_messages": 60_000, "profile_requests": 3000, "burst": 4.0, "questions": 2000,
             "cluster_rounds": 3},
    "quick": {"duration": 2.0, "rounds": 2, "warmup": 1.0, "godmode_duration": 8.0, "drain": 10.0,
              "keys": "1000,10000", "keyspace_duration": 2.0, "seed_budget": 2.0,
              "raw_messages": 6000, "profile_requests": 500, "burst": 2.0, "questions": 500,
              "cluster_rounds": 1},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short smoke run (~1 minute)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results; "
                        "bench/results/raw/quick with --quick, so a smoke run keeps the full results)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1),
                        help="gunicorn workers for both apps (default as gunicorn.conf.py)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections, ratio phase")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads, ratio phase")
    parser.add_argument("--duration", type=float, help="seconds per measured wrk run, ratio phase")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the nine wrk runs, ratio phase")
    parser.add_argument("--warmup", type=float, help="seconds of discarded wrk run before each measured one")
    parser.add_argument("--godmode-duration", type=float, help="seconds humans keep asking, godmode phase")
    parser.add_argument("--drain", type=float, help="longest wait for bots and pollers to finish, godmode phase")
    parser.add_argument("--keys", help="comma-separated keyspace sizes, keyspace phase")
    parser.add_argument("--messages-per-key", type=int, default=3, help="messages preloaded per key")
    parser.add_argument("--keyspace-duration", type=float, help="seconds per wrk run, keyspace phase")
    parser.add_argument("--seed-budget", type=float, help="seconds per size spent timing each seed read")
    parser.add_argument("--raw-messages", type=int, help="appends sent in the raw phase")
    parser.add_argument("--profile-requests", type=int, help="requests per profiled endpoint")
    parser.add_argument("--burst", type=float, help="seconds of back-to-back appends, drift phase")
    parser.add_argument("--questions", type=int, help="questions queued for the bots, claims phase")
    parser.add_argument("--bots", type=int, default=claims.Config.bots, help="concurrent bot loops, claims phase")
    parser.add_argument("--cluster-rounds", type=int, help="interleaved rounds of the six wrk runs, cluster phase")
    parser.add_argument("--cluster-wide-humans", type=int, default=cluster.Config.wide_humans,
                        help="humans in the balance-only God Mode run, cluster phase")
    args = parser.parse_args(argv)
    for name, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = RESULTS / "raw" / "quick" if args.quick else RESULTS
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    args.keys = tuple(int(k) for k in args.keys.split(","))
    return args


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _git(*argv: str) -> str:
    done = subprocess.run(["git", *argv], check=False, cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def meta(args: argparse.Namespace, client: redis.Redis) -> dict[str, Any]:
    dirty = _git("status", "--porcelain", "--", "app", "gunicorn.conf.py")
    return {
        "commit": _git("rev-parse", "--short", "HEAD") + ("+uncommitted app changes" if dirty else ""),
        "mode": "quick" if args.quick else "full",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": client.info("server")["redis_version"],
        "workers": args.workers,
        "phases": args.phases,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": os.getloadavg(),  # other work on the machine skews every figure: disclose it
    }


def run_phases(args: argparse.Namespace, results: dict[str, Any]) -> None:
    raw_dir = args.out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        server = RedisServer()  # private, no persistence, on a free port; the shared 6379 is never touched
        stack.callback(server.close)
        client = redis.Redis.from_url(server.url)
        stack.callback(client.close)
        settings = load_settings({**os.environ, "REDIS_URL": server.url})  # what the workers load (PARTITIONS...)
        results["meta"] = meta(args, client)
        log(f"redis-server on {server.url}; starting the service ({args.workers} workers)")
        ours = start_gunicorn(SERVICE_APP, server.url, args.workers, raw_dir)
        stack.callback(ours.stop)

        if "ratio" in args.phases:
            pages = raw_dir / "bare-pages"
            page_bytes = ratio.capture_bare_pages(ours, client, server.url, settings, pages)
            log("ratio: starting the ceiling app and the bare framework")
            with ExitStack() as references:
                ceiling = start_gunicorn(CEILING_APP, server.url, args.workers, raw_dir)
                references.callback(ceiling.stop)
                bare = start_gunicorn(BARE_APP, server.url, args.workers, raw_dir, extra_env={POLL_DIR_ENV: str(pages)})
                references.callback(bare.stop)
                load = Load(args.duration, args.warmup, args.connections, args.threads)
                log(f"ratio: {args.rounds} rounds of 9 × {args.duration:.0f} s of wrk "
                    "(POST, newest page, frontend poll; each on ceiling, ours, bare)")
                apps = {"ceiling": ceiling, "ours": ours, "bare": bare}
                results["ratio"] = ratio.run(apps, client, server.url, settings, load, args.rounds)
                results["ratio"]["bare_page_bytes"] = page_bytes

        if "raw" in args.phases:
            log(f"raw: {args.raw_messages} pipelined appends")
            results["raw_redis"] = raw_redis.run(client, server.url, settings, args.raw_messages)

        if "profile" in args.phases:
            log(f"profile: {args.profile_requests} POSTs and polls under pyinstrument")
            poll_after = ratio.preload_poll_fixture(server.url, settings)
            written = profile.run(server.url, poll_after, raw_dir, args.profile_requests)
            results["profiles"] = {name: _shown(path) for name, path in written.items()}

        if "godmode" in args.phases:
            traffic = godmode_load.Config(duration_s=args.godmode_duration, drain_s=args.drain)
            log(f"godmode: {traffic.duration_s:.0f} s of traffic (+ up to {traffic.drain_s:.0f} s drain)")
            results["godmode"] = godmode_load.run(ours.url, traffic)

        if "keyspace" in args.phases:
            client.flushall()  # our private server: the memory baseline is an empty dataset
            load = Load(args.keyspace_duration, min(1.0, args.warmup), connections=1)  # latency, no queueing
            sizes = keyspace.Config(args.keys, args.messages_per_key, load, args.seed_budget)
            log(f"keyspace: sizes {', '.join(map(str, sizes.sizes))}")
            results["keyspace"] = keyspace.run(ours, client, server.url, settings, sizes)

        if "pollcost" in args.phases:
            load = Load(args.duration, min(1.0, args.warmup), connections=4)
            log(f"pollcost: {pollcost.MESSAGES} messages; polls {' and '.join(map(str, pollcost.BACK))} back")
            results["pollcost"] = pollcost.run(ours, client, server.url, settings, load)

        if "drift" in args.phases:
            log(f"drift: {args.burst:.0f} s burst of appends")
            results["drift"] = drift.run(client, settings, args.burst)

        if "claims" in args.phases:
            bots = claims.Config(questions=args.questions, bots=args.bots)
            log(f"claims: {bots.questions} questions, {bots.bots} bots")
            results["claims"] = claims.run(ours, client, server.url, settings, bots)

        if "cluster" in args.phases:
            results["cluster"] = run_cluster(args, ours, server, client, settings, raw_dir)


def run_cluster(args: argparse.Namespace, ours: Gunicorn, server: RedisServer, client: redis.Redis,
                settings: Settings, raw_dir: Path) -> dict[str, Any]:
    """The cluster phase: a private 3-master + 3-replica cluster and a second service on it, for
    this phase only; the standalone service and its redis-server are the other phases' own."""
    reason = cluster_support()
    if reason is not None:
        log(f"cluster: skipped ({reason})")
        return {"skipped": reason}
    with ExitStack() as stack:
        log("cluster: starting 3 masters + 3 replicas (redis-cli --cluster create)")
        nodes = RedisCluster(masters=3, replicas=1, extra=("--cluster-require-full-coverage", "no"))
        stack.callback(nodes.close)
        masters = {port: nodes.node(port) for port, _slots in nodes.masters()}
        for each in masters.values():
            stack.callback(each.close)
        log_dir = raw_dir / "cluster"
        log_dir.mkdir(parents=True, exist_ok=True)
        on_cluster = start_gunicorn(SERVICE_APP, nodes.url, args.workers, log_dir, extra_env={"REDIS_MODE": "cluster"})
        stack.callback(on_cluster.stop)
        standalone = cluster.Deployment("standalone", ours, settings, {server.port: client})
        on_nodes = dataclasses.replace(settings, redis_url=nodes.url, redis_mode="cluster")
        clustered = cluster.Deployment("cluster", on_cluster, on_nodes, masters)
        cfg = cluster.Config(load=Load(args.duration, args.warmup, args.connections, args.threads),
                             rounds=args.cluster_rounds,
                             godmode=godmode_load.Config(duration_s=args.godmode_duration, drain_s=args.drain),
                             wide_humans=args.cluster_wide_humans)
        log(f"cluster: God Mode load ({cfg.godmode.duration_s:.0f} s) on each, then {cfg.wide_humans} humans on the "
            f"cluster; {cfg.rounds} rounds of 6 × {cfg.load.duration_s:.0f} s of wrk (POST, newest page, frontend poll)")
        return cluster.run(standalone, clustered, cfg)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    results: dict[str, Any] = {}
    run_phases(args, results)
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results["meta"]["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results["meta"]["loadavg_at_end"] = os.getloadavg()
    for path in report.write(results, args.out):
        log(f"wrote {_shown(path)}")
    print(report.markdown(results))
    failed = [c["metric"] for c in results["checks"] if c["pass"] is False]
    log(f"done in {results['meta']['elapsed_s']} s; targets missed: {len(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
