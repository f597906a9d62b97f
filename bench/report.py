"""Results on disk: latest.json, a README-ready markdown table, and the latency-vs-keyspace plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

from bench.servers import ROOT

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

Check = tuple[str, str, Callable[[dict[str, Any]], float | bool | None], Callable[[Any], bool], str]

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
# The targets are the bare framework's shares (docs: README "Performance"); the ceiling's own
# share of bare is shown beside them: what one Redis round trip with no logic leaves on this machine.
_BARE_TARGETS = (("POST /api/comments", "post", 0.75), ("GET /api/comments?after= (50 msgs)", "get", 0.8),
                 ("GET as the frontend asks under load (6 s back, 200 msgs)", "get_frontend", 0.6))

CHECKS: list[Check] = [
    *[
        check
        for op, key, target in _BARE_TARGETS
        for check in (
            (f"vs bare: {op}", "req/s share of bare", _get("ratio", key, "ratio_vs_bare", "rps"),
             _at_least(target), f"≥ {target}"),
            (f"vs bare: {op}", "the ceiling's req/s share of bare (one Redis round trip, no logic)",
             _get("ratio", key, "ceiling_vs_bare", "rps"), lambda v: None, "for contrast"),
            (f"vs bare: {op}", "req/s share of the ceiling", _get("ratio", key, "ratio", "rps"),
             lambda v: None, "for contrast"),
        )
    ],
    ("Redis cost", "command µs per append (raw phase: the script alone, pipelined)",
     _get("raw_redis", "redis_usec_per_append"), _at_most(25), "≤ 25"),
    ("Redis cost", "command µs per append under the POST load", _get("ratio", "post", "ours", "redis_usec_per_request"),
     lambda v: None, "for contrast"),
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
    ("Frontend poll cost", "Redis command µs per poll, 3,000 back ÷ 500 back", _get("pollcost", "redis_usec_growth"),
     _at_most(1.5), "≤ 1.5"),
    ("Clock", "most a timestamp ran ahead of the wall clock during the burst, ms", _get("drift", "max_lead_ms"),
     _at_most(5), "≤ 5"),
    ("Clock", "lead of the first message after the burst, ms", _get("drift", "first_after_lead_ms"),
     _at_most(5), "≤ 5"),
    ("claim-next under contention", "questions claimed twice", _get("claims", "duplicates"), lambda v: v == 0, "0"),
    ("claim-next under contention", "non-200 answers (409 included) and transport errors",
     lambda r: None if not r.get("claims") else r["claims"]["non_200"] + r["claims"]["transport_errors"],
     lambda v: v == 0, "0"),
    ("claim-next under contention", "questions never claimed", _get("claims", "never_claimed"), lambda v: v == 0, "0"),
    ("Redis Cluster (3 masters)", "God Mode load errors on the cluster", _get("cluster", "godmode", "cluster", "errors"),
     lambda v: v == 0, "0"),
    ("Redis Cluster (3 masters)", "God Mode load: every message seen by every global poller, cluster",
     _get("cluster", "godmode", "cluster", "all_seen_by_every_global_poller"), lambda v: v is True, "yes"),
    # The balance target is the many-humans run: the partition tags split the slots evenly, but the
    # default load's 12 humans hash to 7 of the 12 partitions, which no layout can spread evenly.
    *[
        ("Redis Cluster (3 masters), God Mode load with many humans", f"{what} per master ÷ mean, {end}",
         _get("cluster", "godmode_wide", "balance", what, end), limit, target)
        for what in ("keys", "commands")
        for end, limit, target in (("min", _at_least(0.8), "≥ 0.8"), ("max", _at_most(1.25), "≤ 1.25"))
    ],
    *[
        ("Redis Cluster (3 masters), God Mode load with 12 humans (for contrast)", f"{what} per master ÷ mean, {end}",
         _get("cluster", "godmode", "cluster", "balance", what, end), lambda v: None, "no target: 12 humans")
        for what in ("keys", "commands")
        for end in ("min", "max")
    ],
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


def markdown(results: dict[str, Any], raw: str = "bench/results/latest.json") -> str:
    meta = results["meta"]
    lines = [
        (f"Benchmark of {meta['commit']} on {meta['cpus']} CPUs, {meta['mode']} run, {meta['finished']}, "
         f"load average {meta['loadavg_at_start'][0]:.2f} at start "
         f"(`make bench`; raw numbers in {raw})."),
        "",
        "| | metric | result | target | |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c['section']} | {c['metric']} | {_fmt(c['value'])} | {c['target']} | {_verdict(c['pass'])} |"
              for c in results["checks"]]
    lines += ["", *_ratio_table(results.get("ratio")), *_godmode_table(results.get("godmode")),
              *_keyspace_table(results.get("keyspace")), *_raw_table(results.get("raw_redis")),
              *_pollcost_table(results.get("pollcost")), *_drift_table(results.get("drift")),
              *_claims_table(results.get("claims")), *_cluster_table(results.get("cluster"))]
    return "\n".join(lines) + "\n"


_KINDS = (("post", "POST /api/comments"), ("get", "GET /api/comments?after= (50 msgs)"),
          ("get_frontend", "GET as the frontend asks under load (6 s back, 200 msgs)"))


def _ratio_table(ratio: dict[str, Any] | None) -> list[str]:
    if not ratio:
        return []
    load = ratio["load"]
    kinds = [(key, name) for key, name in _KINDS if key in ratio]
    lines = [
        (f"Ours vs the ceiling app (one Redis round trip per request) and the bare framework (no Redis, the "
         f"same JSON), all under the same gunicorn settings; wrk {load['threads']} thread, {load['connections']} "
         f"connections, {ratio['rounds']} interleaved rounds of {load['duration_s']} s per run; medians over "
         "the rounds. Shares: ours' req/s ÷ theirs, their p50 ÷ ours; 1.0 = as fast."),
        "",
        ("| request | req/s share of bare | req/s share of ceiling | p50 share of bare | p50 share of ceiling "
         "| ours' Redis µs/req |"),
        "|---|---|---|---|---|---|",
    ]
    for key, name in kinds:
        r = ratio[key]
        vs_bare, vs_ceiling = r.get("ratio_vs_bare") or {}, r["ratio"]
        lines.append(f"| {name} | {_fmt(vs_bare.get('rps'))} | {_fmt(vs_ceiling['rps'])} | {_fmt(vs_bare.get('p50'))} | "
                     f"{_fmt(vs_ceiling['p50'])} | {_fmt(r['ours']['redis_usec_per_request'])} |")
    lines += [
        "",
        ("| request | app | req/s | p50 ms | p99 ms | Redis command µs/req | Redis CPU µs/req | worker CPU µs/req "
         "| busiest worker's CPU share |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name in kinds:
        for app in ("bare", "ceiling", "ours"):
            r = ratio[key].get(app)
            if r is None:  # results from before the bare framework was measured
                continue
            lines.append(f"| {name} | {app} | {_fmt(r['rps'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | "
                         f"{_fmt(r['redis_usec_per_request'])} | {_fmt(r['redis_cpu_us_per_request'])} | "
                         f"{_fmt(r['app_cpu_us_per_request'])} | {_fmt(r['busiest_worker_share'])} |")
    lines.append("")
    frontend = (ratio.get("queries") or {}).get("get_frontend")
    if frontend:
        since = [q["messages_since"] for q in frontend]
        capped = " (copy capped)" if any(q["more_since_than_copied"] for q in frontend) else ""
        lines.append(f"The frontend poll's `after` was 6 s back with {_fmt(min(since))}–{_fmt(max(since))}{capped} "
                     f"messages since; its page held {_fmt(frontend[0]['page_messages'])} messages "
                     f"({_fmt(frontend[0]['page_bytes'])} bytes).")
    lead_ms = ratio["timestamp_lead_ms"]
    lead = f"{lead_ms / 1000:,.1f} s" if abs(lead_ms) >= 1000 else f"{lead_ms} ms"
    return [*lines, f"After these runs a new message's timestamp was {lead} ahead of the wall clock.", ""]


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


def _pollcost_table(pc: dict[str, Any] | None) -> list[str]:
    if not pc:
        return []
    cfg = pc["config"]
    lines = [
        (f"Frontend poll cost: {_fmt(cfg['messages'])} messages over {cfg['users']} humans, polls of {cfg['page']} "
         f"per page whose `after` lies N messages back (wrk, {cfg['load']['connections']} connections). "
         f"3,000 back costs {_fmt(pc['redis_usec_growth'])}× the Redis command time of 500 back "
         f"({_fmt(pc.get('redis_usec_per_message_growth'))}× per message answered; "
         f"{_fmt(pc['redis_cpu_growth'])}× the Redis process CPU, which includes writing the replies)."),
        "",
        ("| after | messages since | page msgs | Redis command µs/poll | Redis CPU µs/poll | worker CPU µs/poll "
         "| p50 ms | req/s |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for back, row in pc["by_back"].items():
        lines.append(f"| {_fmt(int(back))} back | {_fmt(row['messages_since'])} | {_fmt(row['page_messages'])} | "
                     f"{_fmt(row['redis_usec_per_request'])} | {_fmt(row['redis_cpu_us_per_request'])} | "
                     f"{_fmt(row['app_cpu_us_per_request'])} | {_fmt(row['p50_ms'])} | {_fmt(row['rps'])} |")
    return [*lines, ""]


def _drift_table(drift: dict[str, Any] | None) -> list[str]:
    if not drift:
        return []
    cfg = drift["config"]
    return [
        (f"Clock under a burst: {_fmt(drift['appends'])} appends in {drift['elapsed_s']} s "
         f"({_fmt(drift['appends_per_s'])}/s, {cfg['concurrency']} in flight from one process, no HTTP). "
         f"A timestamp ran at most {_fmt(drift['max_lead_ms'])} ms ahead of the wall clock at its "
         f"acknowledgement; the first message after the burst {_fmt(drift['first_after_lead_ms'])} ms."),
        "",
    ]


def _claims_table(cl: dict[str, Any] | None) -> list[str]:
    if not cl:
        return []
    cfg, per_claim, latency = cl["config"], cl.get("per_claim") or {}, cl["claim_next_latency"]
    return [
        (f"claim-next under contention: {_fmt(cl['queued'])} questions over {cfg['humans']} humans, "
         f"{cfg['bots']} concurrent bots (claim-next, then complete with the claimToken if any), one asyncio "
         f"process using {_fmt(cl.get('bench_client_cpu_share'))} of a core (near 1, it bounds claims/s)."),
        "",
        ("| claims | claims/s | time s | duplicates | non-200 | of which 409 | transport errors | never claimed "
         "| claim-next p50 / p99 ms | Redis µs/claim | scripts/claim | worker CPU µs/claim |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        (f"| {_fmt(cl['claims'])} | {_fmt(cl['claims_per_s'])} | {_fmt(cl['elapsed_s'])} | {_fmt(cl['duplicates'])} | "
         f"{_fmt(cl['non_200'])} | {_fmt(cl['conflicts_409'])} | {_fmt(cl['transport_errors'])} | "
         f"{_fmt(cl['never_claimed'])} | {_fmt(latency['p50_ms'])} / {_fmt(latency['p99_ms'])} | "
         f"{_fmt(per_claim.get('redis_usec_per_request'))} | {_fmt(per_claim.get('redis_scripts_per_request'))} | "
         f"{_fmt(per_claim.get('worker_cpu_us'))} |"),
        "",
    ]


def _cluster_table(cl: dict[str, Any] | None) -> list[str]:
    if not cl or "wrk" not in cl:
        return []
    wrk, gm = cl["wrk"], cl["godmode"]
    load = wrk["load"]
    lines = [
        (f"Redis Cluster: the service on 3 masters (+ 1 replica each, {_fmt(cl['slots_per_master'])} slots each, "
         f"12 partitions) beside one redis-server, same gunicorn settings. wrk {load['connections']} connections, "
         f"{wrk['rounds']} interleaved rounds of {load['duration_s']} s per run, medians; Redis figures summed over "
         "the masters (cluster) or the one server (standalone)."),
        "",
        ("| request | deployment | req/s | cluster ÷ standalone req/s | p50 ms | p99 ms | Redis command µs/req "
         "| Redis CPU µs/req | worker CPU µs/req | commands per master ÷ mean, min–max |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name in _KINDS:
        for dep in ("standalone", "cluster"):
            r = wrk[key][dep]
            share = _fmt(wrk[key]["cluster_rps_share"]) if dep == "cluster" else ""
            spread = wrk[key]["cluster_calls_balance"]
            balance = f"{_fmt(spread['min'])}–{_fmt(spread['max'])}" if dep == "cluster" else ""
            lines.append(f"| {name} | {dep} | {_fmt(r['rps'])} | {share} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | "
                         f"{_fmt(r['redis_usec_per_request'])} | {_fmt(r['redis_cpu_us_per_request'])} | "
                         f"{_fmt(r['app_cpu_us_per_request'])} | {balance} |")
    pages = []
    for key, name in (("get", "newest page"), ("get_frontend", "frontend poll")):
        for dep in ("standalone", "cluster"):
            held = [q["page_messages"] for q in wrk["queries"][key][dep]]
            pages.append(f"{name} {dep} {_fmt(min(held))}–{_fmt(max(held))}")
    lines += [
        "",
        ("Messages per page answered (Redis µs/req is for these pages; a page cut short by an uneven spread "
         f"of timestamps over the partitions says hasMore): {'; '.join(pages)}."),
        "",
        ("| God Mode load | humans | messages/s | requests/s | errors | Redis command µs/req | Redis CPU µs/req "
         "| keys per master ÷ mean | commands per master ÷ mean | Redis CPU per master ÷ mean |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in (("standalone", gm["standalone"]), ("cluster", gm["cluster"]),
                       ("cluster, many humans", cl.get("godmode_wide"))):
        if not run:
            continue
        b = run.get("balance")

        def spread(what: str, b: dict[str, Any] | None = b) -> str:
            return "" if not b else " / ".join(_fmt(v) for v in b[what]["ratio_to_mean"])

        lines.append(f"| {label} | {run['config']['humans']} | {_fmt(run['messages_per_s'])} | "
                     f"{_fmt(run['requests_per_s'])} | {run['errors']} | {_fmt(run['redis_usec_per_request'])} | "
                     f"{_fmt(run['redis_cpu_us_per_request'])} | {spread('keys')} | {spread('commands')} | "
                     f"{spread('cpu')} |")
    lines.append("")
    return [*lines, *_capacity_table(cl["capacity"]), ""]


def _capacity_table(cap: dict[str, Any]) -> list[str]:
    f = cap["formula"]
    basis = cap["by_basis"]["redis_cpu"]
    command = cap["by_basis"]["command"]
    polls = basis["polls"]
    lines = [
        (f"Capacity of N masters, on paper, from the Redis CPU per request measured above (commands, scripts "
         f"and network I/O of the redis-server process): appends/s(N) = {f['appends_per_s(N)']}; "
         f"c_poll(N) = {f['c_poll(N)']}; polls/s(N) = {f['polls_per_s(N)']}; active tabs(N) = {f['active_tabs(N)']}; "
         f"mixed: {f['mixed']}; {f['where']}. c_append = {_fmt(basis['c_append'])} µs; newest-page poll "
         f"c_poll(1) = {_fmt(polls['get']['c_poll_1'])}, c_poll(3) = {_fmt(polls['get']['c_poll_3'])} µs; frontend "
         f"poll c_poll(1) = {_fmt(polls['get_frontend']['c_poll_1'])}, c_poll(3) = "
         f"{_fmt(polls['get_frontend']['c_poll_3'])} µs. One master at 100% of a core: "
         f"{_fmt(basis['per_master_appends_per_s_at_100pct'])} appends/s (from command time alone: "
         f"{_fmt(command['per_master_appends_per_s_at_100pct'])})."),
        "",
        ("| masters | appends/s | active tabs, newest-page polls | active tabs, frontend polls under load "
         "| appends/s, command time only | active tabs, frontend polls, command time only |"),
        "|---|---|---|---|---|---|",
    ]
    for row, crow in zip(basis["by_masters"], command["by_masters"], strict=True):
        lines.append(f"| {row['masters']} | {_fmt(row['appends_per_s'])} | {_fmt(row['get_active_tabs'])} | "
                     f"{_fmt(row['get_frontend_active_tabs'])} | {_fmt(crow['appends_per_s'])} | "
                     f"{_fmt(crow['get_frontend_active_tabs'])} |")
    return lines


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
    raw = written[0].resolve()
    written[1].write_text(markdown(results, str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw)))
    if results.get("keyspace"):
        written.append(out_dir / "poll_latency_vs_keys.png")
        plot(results["keyspace"], written[-1])
    return written
