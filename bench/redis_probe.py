"""Redis-side cost of a phase: INFO commandstats and CPU read before and after it.

On a cluster each master is read on its own; combined() sums their costs into the cluster's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

SCRIPT_COMMANDS = frozenset({"evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "fcall_ro"})
# Not a request's: our own snapshots, and a cluster replica's acknowledgements to its master.
_PROBE_COMMANDS = frozenset({"info", "replconf"})


@dataclass(frozen=True)
class Snapshot:
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)
    cpu_s: float  # used_cpu_user + used_cpu_sys of the server process


@dataclass(frozen=True)
class Cost:
    """What Redis spent between two snapshots."""

    commands: dict[str, tuple[int, int]]
    cpu_s: float

    def calls(self, command: str) -> int:
        return self.commands.get(command, (0, 0))[0]

    def usec_per_call(self, command: str) -> float | None:
        calls, usec = self.commands.get(command, (0, 0))
        return usec / calls if calls else None

    def usec_per_request(self, requests: int) -> float | None:
        """Redis time in the requests' own commands. The commands a script runs are also counted on
        their own, so when scripts ran only the scripts count (a native command sent beside a
        script is then left out); without scripts every command counts."""
        if not requests:
            return None
        mine = {name: usec for name, (_calls, usec) in self.commands.items() if name not in _PROBE_COMMANDS}
        scripts = [usec for name, usec in mine.items() if name in SCRIPT_COMMANDS]
        return (sum(scripts) if scripts else sum(mine.values())) / requests

    def service_calls(self) -> int:
        """Commands the service sent (not our snapshots, replication or cluster housekeeping)."""
        return sum(calls for name, (calls, _usec) in self.commands.items()
                   if name not in _PROBE_COMMANDS and not name.startswith("cluster"))

    def scripts_per_request(self, requests: int) -> float | None:
        return sum(self.calls(name) for name in SCRIPT_COMMANDS) / requests if requests else None

    def breakdown(self, requests: int) -> dict[str, float]:
        """Each command's µs per request, busiest first. A script's time includes the commands it
        runs, which are listed on their own too: the difference is the script's own (Lua) time."""
        if not requests:
            return {}
        spent = sorted(self.commands.items(), key=lambda item: -item[1][1])
        return {name: round(usec / requests, 2) for name, (_calls, usec) in spent
                if name not in _PROBE_COMMANDS and usec / requests >= 0.01}

    def cpu_us_per(self, requests: int) -> float | None:
        """Whole-process CPU (commands, scripts, network I/O) per request."""
        return self.cpu_s * 1e6 / requests if requests else None

    def figures(self, requests: int) -> dict[str, float | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "redis_usec_per_request": rounded(self.usec_per_request(requests)),
            "redis_scripts_per_request": rounded(self.scripts_per_request(requests)),
            "redis_cpu_us_per_request": rounded(self.cpu_us_per(requests)),
        }


def snapshot(client: redis.Redis) -> Snapshot:
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    commands = {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}
    return Snapshot(commands, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


def cost(before: Snapshot, after: Snapshot) -> Cost:
    diff = {}
    for name, (calls, usec) in after.commands.items():
        calls0, usec0 = before.commands.get(name, (0, 0))
        if calls > calls0:
            diff[name] = (calls - calls0, usec - usec0)
    return Cost(diff, after.cpu_s - before.cpu_s)


def combined(costs: Sequence[Cost]) -> Cost:
    """The sum of several servers' costs (a cluster's masters): commands and CPU added up."""
    commands: dict[str, tuple[int, int]] = {}
    for each in costs:
        for name, (calls, usec) in each.commands.items():
            calls0, usec0 = commands.get(name, (0, 0))
            commands[name] = (calls0 + calls, usec0 + usec)
    return Cost(commands, sum(each.cpu_s for each in costs))


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])
