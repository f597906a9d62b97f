"""The one place that spells Redis key names.

Message keys are exactly the formats operators type into redis-cli:
    conv:{humanUsername}:{humanColor}:{aiUsername}:{aiColor}
    godmode:{humanUsername}:{humanColor}:{aiUsername}:{aiColor}:{sessionId}
Companion data lives under other prefixes, so `SCAN MATCH godmode:H:C:A:C:*` lists exactly
one pair's sessions. Per-key companions wrap the message key in a hash tag `{...}`, which puts
them in the message key's cluster slot.
"""

from __future__ import annotations

import re

CONV = "conv"
GODMODE = "godmode"

# Key parts come from users. Forbidden: the separator ':', glob characters (SCAN MATCH patterns
# are built from parts), braces (cluster hash tags), and control characters.
KEY_PART_MAX = 64
KEY_PART_RE = re.compile(r"[^:*?\[\]\\{}\x00-\x1f\x7f-\x9f]{1,64}")
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # message ids and session ids

# AI identities the server fills in when the client names none.
DEFAULT_AI_COLOR = "default"
PLATFORM = "platform"

# Singletons. Hot-path scripts touch these on every append/poll.
STREAM = "store:stream"  # global poll index: entry id "<ts>-0", fields k=<message key>, t=h|a
STATS = "store:stats"  # counters and globalScore
RECENT = "store:recent"  # copies of the newest messages: a recent poll is one native ZRANGE
MSGLOC = "store:msgloc"  # id -> "<ts> <domain> <message key>"
CLOCK_FIELD = ":clock"  # in MSGLOC: last timestamp handed out (no id contains ':')
MSGLOC_EXPIRY = "store:msgloc:expiry"  # trimmed ids -> ms when their idempotency record lapses
PENDING = "queue:pending"  # id -> rank (priority first, then age)
PROCESSING = "queue:processing"  # id -> claimedAt ms

SIZE_PREFIX, SIZE_SUFFIX = "size:{", "}"  # hash: total, inflight bytes of one message key
INFLIGHT_PREFIX = "inflight:{"  # zset: id -> ts of that key's pending/processing messages
CONTEXT_PREFIX = "queue:context:"  # the bot's context for one queued message
SESSIONS_PREFIX = "sessions:"  # zset per human, member "{aiUsername}:{aiColor}:{sessionId}"
SESSION_META_PREFIX = "godmode-session:"  # the bot's optional session metadata

# Everything this service writes, for purge and stats.
ALL_PATTERNS = (
    "conv:*",
    "godmode:*",
    "size:*",
    "inflight:*",
    "sessions:*",
    "godmode-session:*",
    "queue:*",
    "store:*",
)

# Queue rank = (99 - priority) * PRIORITY_STRIDE + timestamp: priority high first, then oldest.
# The stride exceeds any ms timestamp until year 2286; 99 strides + ts stays below 2**53, so the
# double score is exact.
PRIORITY_STRIDE = 10**13


def conv_key(human_user: str, human_color: str, ai_user: str, ai_color: str) -> str:
    return f"conv:{human_user}:{human_color}:{ai_user}:{ai_color}"


def human_godmode_prefix(human_user: str, human_color: str) -> str:
    return f"godmode:{human_user}:{human_color}:"


def godmode_prefix(human_user: str, human_color: str, ai_user: str, ai_color: str) -> str:
    return f"{human_godmode_prefix(human_user, human_color)}{ai_user}:{ai_color}:"


def godmode_key(human_user: str, human_color: str, ai_user: str, ai_color: str, session_id: str) -> str:
    return godmode_prefix(human_user, human_color, ai_user, ai_color) + session_id


def size_key(message_key: str) -> str:
    return f"{SIZE_PREFIX}{message_key}{SIZE_SUFFIX}"


def inflight_key(message_key: str) -> str:
    return f"{INFLIGHT_PREFIX}{message_key}}}"


def context_key(message_id: str) -> str:
    return CONTEXT_PREFIX + message_id


def human_sessions_key(human_user: str, human_color: str) -> str:
    return f"{SESSIONS_PREFIX}{human_user}:{human_color}"


def session_member(ai_user: str, ai_color: str, session_id: str) -> str:
    return f"{ai_user}:{ai_color}:{session_id}"


def session_pair_range(ai_user: str, ai_color: str) -> tuple[str, str]:
    """ZRANGE BYLEX bounds selecting one pair's members of a human's sessions zset."""
    prefix = f"{ai_user}:{ai_color}:"
    return "[" + prefix, "(" + prefix[:-1] + ";"  # ';' sorts right after ':'


def session_meta_key(session_id: str) -> str:
    return SESSION_META_PREFIX + session_id


def queue_rank_base(priority: int) -> int:
    return (99 - priority) * PRIORITY_STRIDE
