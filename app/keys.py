"""The one place that spells Redis key names.

Message keys are exactly the formats operators type into redis-cli:
    conv:{humanUsername}:{humanColor}:{aiUsername}:{aiColor}
    godmode:{humanUsername}:{humanColor}:{aiUsername}:{aiColor}:{sessionId}
On a Redis Cluster they end in their partition's hash tag (Partition.key_suffix), so a script can
write a message key and its partition's keys together; prefix scans still match as written.

Everything else belongs to a partition. A message belongs to the partition of its human, so one
human's conversations, sessions and pair view live together, and every write is one script on
one partition. A partition's companion keys share one Redis Cluster hash tag, `{pI.N}`, with N
picked so that the P tags fall into P equal slices of the slot space (even spread over masters).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

CONV = "conv"
GODMODE = "godmode"

# Key parts come from users. Forbidden: the separator ':', glob characters (SCAN MATCH patterns
# are built from parts), braces (cluster hash tags), and control characters.
KEY_PART_MAX = 64
KEY_PART_RE = re.compile(r"[^:*?\[\]\\{}\x00-\x1f\x7f-\x9f]{1,64}")
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # message ids and session ids
# A message's domain (a client's, or DEFAULT_DOMAIN) is spliced into the stored JSON by Lua: no
# quotes or escapes can pass. [0-9], not \d: \d also takes Arabic-Indic digits.
DOMAIN_RE = re.compile(r"[A-Za-z0-9.:_-]{1,253}")

# AI identities the server fills in when the client names none.
DEFAULT_AI_COLOR = "default"
PLATFORM = "platform"

# The PARTITIONS a store was created with; read at start-up only, never on a request.
PARTITIONS_KEY = "store:partitions"
MAX_PARTITIONS = 1024  # one slot each; more only adds per-poll reads

SESSION_META_PREFIX = "godmode-session:"  # the bot's optional session metadata (any slot)

# The feed's marker member: its score is the newest timestamp the feed no longer holds (trimmed,
# or lost with a deleted feed). Message members start with '{', so it never collides.
FEED_MARK = "~"

# Queue rank = (99 - priority) * PRIORITY_STRIDE + timestamp: priority high first, then oldest.
# The stride exceeds any ms timestamp until year 2286; 99 strides + ts stays below 2**53, so the
# double score is exact.
PRIORITY_STRIDE = 10**13

# Everything this service writes outside a partition's own keys, for purge's final SCAN.
MESSAGE_PATTERNS = ("conv:*", "godmode:*")


def conv_key(human_user: str, human_color: str, ai_user: str, ai_color: str, suffix: str = "") -> str:
    """`suffix` is the partition's key suffix: "" on one Redis, its hash tag on a cluster."""
    return f"conv:{human_user}:{human_color}:{ai_user}:{ai_color}{suffix}"


def human_godmode_prefix(human_user: str, human_color: str) -> str:
    return f"godmode:{human_user}:{human_color}:"


def godmode_prefix(human_user: str, human_color: str, ai_user: str, ai_color: str) -> str:
    return f"{human_godmode_prefix(human_user, human_color)}{ai_user}:{ai_color}:"


def godmode_key(human_user: str, human_color: str, ai_user: str, ai_color: str, session_id: str,
                suffix: str = "") -> str:
    return godmode_prefix(human_user, human_color, ai_user, ai_color) + session_id + suffix


def untagged(message_key: str) -> str:
    """A message key without its cluster hash tag: the name operators know."""
    return message_key.partition("{")[0]


def message_key_human(message_key: str) -> tuple[str, str]:
    """(humanUsername, humanColor) of a conv: or godmode: key."""
    _, human_user, human_color, _ = message_key.split(":", 3)
    return human_user, human_color


def session_member(ai_user: str, ai_color: str, session_id: str) -> str:
    return f"{ai_user}:{ai_color}:{session_id}"


def session_id_field(human_user: str, human_color: str, session_id: str) -> str:
    """A session's field in its partition's session_ids hash (the value is its session member)."""
    return f"{human_user}:{human_color}:{session_id}"


def session_meta_key(session_id: str) -> str:
    return SESSION_META_PREFIX + session_id


def queue_rank_base(priority: int) -> int:
    return (99 - priority) * PRIORITY_STRIDE


def partition_index(human_user: str, human_color: str, partitions: int) -> int:
    """The partition of a human. crc32 is stable across processes and versions (hash() is not)."""
    return zlib.crc32(f"{human_user}:{human_color}".encode()) % partitions


def _tag(index: int, partitions: int) -> str:
    low = index * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    n = 0
    while not low <= key_slot(f"p{index}.{n}".encode()) < high:
        n += 1
    return f"{{p{index}.{n}}}"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition's keys. All carry the partition's hash tag, so one script may touch them all."""

    index: int
    tag: str
    # Appended to the partition's conv:/godmode: key names. On one Redis nothing (the names stay
    # exactly as operators type them); on a cluster the tag, so a message key shares its
    # partition's slot while prefix scans (`godmode:{hU}:{hC}:{aU}:{aC}:*`) still match.
    key_suffix: str = ""

    @property
    def feed(self) -> str:  # zset ts -> copy of each of the newest FEED_WINDOW messages, + FEED_MARK
        return f"feed:{self.tag}"

    @property
    def ids(self) -> str:  # hash id -> location record (lua/_lib.lua; scripts.parse_location)
        return f"ids:{self.tag}"

    @property
    def lapses(self) -> str:  # zset id -> ms its record lapses (ids of trimmed messages)
        return f"lapses:{self.tag}"

    @property
    def meta(self) -> str:  # hash: clock, convKeys, godmodeKeys, messages, bytes, globalScore
        return f"meta:{self.tag}"

    @property
    def sizes(self) -> str:  # hash message key -> "<bytes> <in-flight bytes> <count>": the key index
        return f"sizes:{self.tag}"

    @property
    def pending(self) -> str:  # zset id -> rank
        return f"pending:{self.tag}"

    @property
    def processing(self) -> str:  # zset id -> claimedAt ms
        return f"processing:{self.tag}"

    @property
    def claims(self) -> str:  # hash id -> claim token of the current claim
        return f"claims:{self.tag}"

    @property
    def contexts(self) -> str:  # hash id -> the bot's context JSON of a queued message
        return f"contexts:{self.tag}"

    @property
    def sessions_prefix(self) -> str:
        return f"sessions:{self.tag}:"

    @property
    def session_ids(self) -> str:  # hash session_id_field -> session member: one session found by id alone
        return f"sessionids:{self.tag}"

    def sessions(self, human_user: str, human_color: str) -> str:
        """zset of one human's sessions, members "{aiUsername}:{aiColor}:{sessionId}", each scored by
        its session's first message score: ZRANGE ... REV lists them newest first."""
        return f"{self.sessions_prefix}{human_user}:{human_color}"

    def pair_sessions(self, human_user: str, human_color: str, ai_user: str, ai_color: str) -> str:
        """The same index for one pair's sessions only (same members, same scores)."""
        return f"{self.sessions(human_user, human_color)}:{ai_user}:{ai_color}"

    def session_index(self, human_user: str, human_color: str, member: str) -> tuple[str, str]:
        """(pair sessions index, session_ids field) of a session member; for "" (no session) the
        human's index and "", which the scripts then leave alone."""
        if not member:
            return self.sessions(human_user, human_color), ""
        ai_user, ai_color, session_id = member.split(":", 2)
        return (self.pair_sessions(human_user, human_color, ai_user, ai_color),
                session_id_field(human_user, human_color, session_id))

    def own_keys(self) -> tuple[str, ...]:
        """Every fixed key of the partition (per-human sessions keys are found through sizes)."""
        return (self.feed, self.ids, self.lapses, self.meta, self.sizes, self.pending, self.processing,
                self.claims, self.contexts, self.session_ids)


def partitions(count: int, cluster: bool = False) -> tuple[Partition, ...]:
    return _partitions(count, cluster)


@lru_cache(maxsize=8)
def _partitions(count: int, cluster: bool) -> tuple[Partition, ...]:
    tags = [_tag(i, count) for i in range(count)]
    return tuple(Partition(i, tag, tag if cluster else "") for i, tag in enumerate(tags))


def partition_of(human_user: str, human_color: str, count: int, cluster: bool = False) -> Partition:
    return partitions(count, cluster)[partition_index(human_user, human_color, count)]
