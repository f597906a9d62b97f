"""God Mode session answers: their bounds and the listing's cursor. Pure (no I/O).

A listing page follows the human's (or the pair's) sessions index newest first; its cursor names
the last session it examined, (member, score), so the next page starts right after it by rank
whatever was added meanwhile, and after its score if it was deleted since.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from . import keys
from .errors import BadRequest

PAGE_DEFAULT = 50
PAGE_MAX = 200
# A page's bytes are bounded as well as its count: what the script returns per session is its
# first message and the human's question (up to MAX_KEY_BYTES each), plus metadata when needed.
PAGE_MAX_BYTES = 1024 * 1024
# One session's messages in GET /api/godmode-session: a session holds at most MAX_KEY_BYTES
# (128 KiB by default), so only a larger MAX_KEY_BYTES or a key written behind the service reaches it.
SESSION_MAX_BYTES = 2 * 1024 * 1024
CURSOR_PREFIX = "s1."
CURSOR_PATTERN = r"^(s1\.[A-Za-z0-9_-]{1,400})?$"  # OpenAPI; "" = absent
_SCORE_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?")


def encode_cursor(member: str, score: str) -> str:
    raw = f"{score} {member}".encode()
    return CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(member, score) of a cursor this service issued; ValueError otherwise."""
    if not re.fullmatch(CURSOR_PATTERN, cursor) or not cursor:
        raise ValueError("not a cursor")
    body = cursor[len(CURSOR_PREFIX):]
    try:
        score, _, member = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().partition(" ")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor") from None
    parts = member.split(":")
    if (not _SCORE_RE.fullmatch(score) or len(parts) != 3 or not all(keys.KEY_PART_RE.fullmatch(p) for p in parts[:2])
            or not keys.ID_RE.fullmatch(parts[2])):
        raise ValueError("not a cursor")
    return member, score


def cursor_query(params: Mapping[str, str]) -> tuple[str, str] | None:
    """The `cursor` query parameter as (member, score); None when absent or empty."""
    cursor = params.get("cursor")
    if not cursor:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError:
        raise BadRequest("cursor", "is not a cursor this service issued") from None
