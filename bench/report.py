"""Results on disk: latest.json, a README-ready markdown table, and the latency-vs-keyspace plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

Check = tuple[str, str, Callable[[dict[str, Any]], float | bool | None], Callable[[Any], bool], str]

_RATIO_TARGET = 0.85


def _get(*path: str | int) -> Callable[[dict[str, Any]], Any]:
    def read(results: dict[str, Any]) -> Any:
        value: Any = results
        for part in path:
            if value is None:
                return None
            value = value[part] if isinstance(part, int) else value.get(part)
        return value
    return read


def _sum_fields(tree: Any, names: tuple[str, ...]) -> int:
    """Sum of every field called one of `names`, anywhere in the results."""
    if isinstance(tree, dict):
        return sum(int(v) if k in names and isinstance(v, (int, float)) else _sum_fields(v, names)
                   for k, v in tree.items())
    if isinstance(tree, list):
        return sum(_sum_fields(v, names) for v in tree)
    return 0


def _at_least(limit: float) -> Callable[[Any], bool]:
    return lambda v: v is not None and v >= limit


def _at_most(limit: float) -> Callable[[Any], bool]:
    return lambda v: v is not None and v <= limit


# (section, metric, value, passes, target as written in the table)
CHECKS: list[Check] = [
    *[
        (f"vs ceiling: {op}", f"{label} share of ceiling", _get("ratio", key, "ratio", field),
         _at_least(_RATIO_TARGET), f"≥ {_RATIO_TARGET}")
        for op, key in (("POST /api/comments", "post"), ("GET /api/comments?after= (50 msgs)", "get"))
        for label, field in (("req/s", "rps"), ("p50", "p50"), ("p99", "p99"))
    ],
    ("Redis cost", "command µs per append", _get("ratio", "post", "ours", "redis_usec_per_request"),
     _at_most(30), "≤ 30"),
    ("Redis cost", "command µs per 50-message poll", _get("ratio", "get", "ours", "redis_usec_per_request"),
     _at_most(40), "≤ 40"),
    ("wrk", "non-2xx answers and socket errors, every wrk run", lambda r: _sum_fields(r, ("non2xx", "socket_errors")),
     lambda v: v == 0, "0"),
    ("God Mode load", "errors", _get("godmode", "errors"), lambda v: v == 0, "0"),
    ("God Mode load", "every message seen by every global poller",
     _get("godmode", "all_seen_by_every_global_poller"), lambda v: v is True, "yes"),
    ("Keyspace", "global poll p50, largest ÷ smallest keyspace", _get("keyspace", "global_p50_growth"),
     _at_most(1.2), "≤ 1.2"),
    ("Keyspace", "pair view p50, largest ÷ smallest keyspace", _get("keyspace", "pair_p50_growth"),
     _at_most(1.2), "≤ 1.2"),
    ("Memory", "Redis used_memory per stored message byte",
     _get("keyspace", "sizes", -1, "memory", "used_memory_per_message_byte"), _at_most(2.0), "≤ 2.0"),
]


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for section, metric, value_of, passes, target in CHECKS:
        try:
            value = value_of(results)
        except (KeyError, IndexError, TypeError):
            value = None
        out.append({"section": section, "metric": metric, "value": value, "target": target,
                    "pass": None if value is None else passes(value)})
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _verdict(passed: bool | None) -> str:
    return "–" if passed is None else ("✅" if passed else "❌")


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        (f"Benchmark of {meta['commit']} on {meta['cpus']} CPUs, {meta['mode']} run, {meta['finished']}, "
         f"load average {meta['loadavg_at_start'][0]:.2f} at start "
         f"(`make bench`; raw numbers in bench/results/latest.json)."),
        "",
        "| | metric | result | target | |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c['section']} | {c['metric']} | {_fmt(c['value'])} | {c['target']} | {_verdict(c['pass'])} |"
              for c in results["checks"]]
    lines += ["", *_ratio_table(results.get("ratio")), *_godmode_table(results.get("godmode")),
              *_keyspace_table(results.get("keyspace")), *_raw_table(results.get("raw_redis"))]
    return "\n".join(lines) + "\n"


def _ratio_table(ratio: dict[str, Any] | None) -> list[str]:
    if not ratio:
        return []
    load = ratio["load"]
    lines = [
        (f"Ours vs the ceiling app (same gunicorn settings, one Redis round trip per request); wrk "
         f"{load['threads']} thread, {load['connections']} connections, {ratio['rounds']} interleaved rounds of "
         f"{load['duration_s']} s per run; medians over the rounds."),
        "",
        ("| request | app | req/s | p50 ms | p99 ms | Redis command µs/req | Redis CPU µs/req | worker CPU µs/req "
         "| busiest worker's CPU share |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for op, name in (("post", "POST /api/comments"), ("get", "GET /api/comments?after= (50 msgs)")):
        for app in ("ceiling", "ours"):
            r = ratio[op][app]
            lines.append(f"| {name} | {app} | {_fmt(r['rps'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | "
                         f"{_fmt(r['redis_usec_per_request'])} | {_fmt(r['redis_cpu_us_per_request'])} | "
                         f"{_fmt(r['app_cpu_us_per_request'])} | {_fmt(r['busiest_worker_share'])} |")
    lead_s = ratio["timestamp_lead_ms"] / 1000
    return [*lines, "", f"After these runs a new message's timestamp was {lead_s:,.1f} s ahead of the wall clock.", ""]


def _godmode_table(gm: dict[str, Any] | None) -> list[str]:
    if not gm:
        return []
    cfg = gm["config"]
    lines = [
        (f"God Mode traffic: {cfg['humans']} humans, {cfg['bots']} bots, {cfg['global_pollers']} global pollers and "
         f"{cfg['humans']} pair pollers every {cfg['poll_interval_s']} s, for {cfg['duration_s']} s: "
         f"{_fmt(gm['messages_accepted'])} messages accepted ({_fmt(gm['messages_per_s'])}/s), "
         f"{gm['sessions_completed']} sessions, {gm['errors']} errors, "
         f"{gm['global_pollers_missing_max']} missed by the worst global poller."),
        "",
        "| request | count | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    lines += [f"| {op} | {_fmt(v['count'])} | {_fmt(v['p50_ms'])} | {_fmt(v['p99_ms'])} |"
              for op, v in gm["latency"].items()]
    return [*lines, ""]


def _keyspace_table(ks: dict[str, Any] | None) -> list[str]:
    if not ks:
        return []
    lines = [
        (f"Poll latency as the keyspace grows: ours through HTTP (wrk, {ks['config']['load']['connections']} "
         "connection(s)) and through Store (one call at a time, no HTTP), and the seed's list-load-filter-sort "
         "against Redis directly (no HTTP, so compare it with the Store column). The global poll answers the "
         "newest 50 messages; the old-cursor poll 50 messages from before them all, as a tab back from a "
         "long backoff asks."),
        "",
        ("| keys | messages | HTTP global poll p50 / p99 ms | HTTP global poll, old cursor p50 / p99 ms "
         "| HTTP pair view p50 / p99 ms | Store global / pair p50 ms | seed global / pair p50 ms "
         "| used_memory ÷ message bytes |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in ks["sizes"]:
        lines.append(
            f"| {_fmt(row['keys'])} | {_fmt(row['memory']['messages'])} | "
            f"{_fmt(row['ours_global']['p50_ms'])} / {_fmt(row['ours_global']['p99_ms'])} | "
            f"{_fmt(row['ours_global_old_cursor']['p50_ms'])} / {_fmt(row['ours_global_old_cursor']['p99_ms'])} | "
            f"{_fmt(row['ours_pair']['p50_ms'])} / {_fmt(row['ours_pair']['p99_ms'])} | "
            f"{_fmt(row['ours_store_global']['p50_ms'])} / {_fmt(row['ours_store_pair']['p50_ms'])} | "
            f"{_fmt(row['seed_global']['p50_ms'])} / {_fmt(row['seed_pair']['p50_ms'])} | "
            f"{_fmt(row['memory']['used_memory_per_message_byte'])} |"
        )
    return [*lines, "", "![poll latency vs keyspace](bench/results/poll_latency_vs_keys.png)", ""]


def _raw_table(raw: dict[str, Any] | None) -> list[str]:
    if not raw:
        return []
    return [
        (f"Storage tier alone: {_fmt(raw['appends_per_s'])} appends/s from {raw['pipelines']} pipelined "
         f"redis-py clients; {_fmt(raw['redis_usec_per_append'])} µs of Redis per append, so one Redis "
         f"core tops out near {_fmt(raw['single_thread_ceiling_per_s'])} appends/s."),
        "",
    ]


def plot(keyspace: dict[str, Any], path: Path) -> None:
    sizes = keyspace["sizes"]
    x = [row["keys"] for row in sizes]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, key, style in (
        ("ours, global poll: HTTP", "ours_global", "o-C0"),
        ("ours, global poll from an old cursor: HTTP", "ours_global_old_cursor", "^-C4"),
        ("ours, global poll: Store, no HTTP", "ours_store_global", "o:C0"),
        ("seed, global poll: no HTTP", "seed_global", "o--C3"),
        ("ours, God Mode pair view: HTTP", "ours_pair", "s-C2"),
        ("ours, God Mode pair view: Store, no HTTP", "ours_store_pair", "s:C2"),
        ("seed, God Mode pair view: no HTTP", "seed_pair", "s--C1"),
    ):
        ax.plot(x, [row[key]["p50_ms"] for row in sizes], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("conversation + session keys")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("Poll latency vs keyspace size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results["checks"] = evaluate(results)
    written = [out_dir / "latest.json", out_dir / "README-table.md"]
    written[0].write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    written[1].write_text(markdown(results))
    if results.get("keyspace"):
        written.append(out_dir / "poll_latency_vs_keys.png")
        plot(results["keyspace"], written[-1])
    return written
