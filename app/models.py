"""Request validation and the stored message shape. Pure: no I/O.

Every check that fails raises BadRequest naming the field, so a bad request writes nothing.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from . import feed, keys
from .config import Settings
from .errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from .scripts import SessionRow

COLOR_RE = re.compile(r"[0-9]{9}(?:-[A-Za-z0-9]{10})?")  # [0-9], not \d: \d also takes Arabic-Indic digits
DOMAIN_RE = keys.DOMAIN_RE
INT_RE = re.compile(r"-?[0-9]{1,30}")
MAX_TS = 2**53  # timestamps are JSON numbers; past this a double loses integers
CONTEXT_MAX_ITEMS = 200
ID_ALPHABET = string.ascii_lowercase + string.digits
GOD_MODE_ENTITY = "god-mode"

_decoder = msgspec.json.Decoder()
encode = msgspec.json.encode


def decode(raw: bytes) -> Any:
    return _decoder.decode(raw)


# ---------------------------------------------------------------------------------------------
# Field checks


def _str(body: Mapping[str, Any], field: str, name: str | None = None, *, required: bool = False) -> str | None:
    value = body.get(field)
    label = name or field
    if value is None:
        if required:
            raise BadRequest(label, "is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(label, "must be a string")
    return value


def key_part(value: str | None, field: str) -> str:
    if value is None or value == "":
        raise BadRequest(field, "is required")
    if not keys.KEY_PART_RE.fullmatch(value):
        raise BadRequest(
            field,
            f"must be 1-{keys.KEY_PART_MAX} characters without ':', '*', '?', '[', ']', '\\', "
            "'{', '}' or control characters",
        )
    return value


def color(value: str | None, field: str) -> str:
    if value is None or value == "":
        raise BadRequest(field, "is required")
    if not COLOR_RE.fullmatch(value):
        raise BadRequest(field, "must be 9 digits, optionally followed by '-' and 10 letters or digits")
    return value


def ident(value: str | None, field: str) -> str:
    if value is None or value == "":
        raise BadRequest(field, "is required")
    if not keys.ID_RE.fullmatch(value):
        raise BadRequest(field, "must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return value


def _int_in(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(field, f"must be an integer from {low} to {high}")
    if isinstance(value, float):
        if not value.is_integer():
            raise BadRequest(field, f"must be an integer from {low} to {high}")
        value = int(value)
    if not low <= value <= high:
        raise BadRequest(field, f"must be an integer from {low} to {high}")
    return int(value)


def json_object(raw: bytes, field: str = "body") -> dict[str, Any]:
    try:
        body = decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec reports bad UTF-8 as the latter
        raise BadRequest(field, f"is not valid JSON ({exc})") from None
    except RecursionError:  # msgspec's nesting limit: ~1000 levels, a 2 KB body
        raise BadRequest(field, "is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest(field, "must be a JSON object")
    return body


def new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(11))


# ---------------------------------------------------------------------------------------------
# POST /api/comments


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """Everything the append script needs, decided before touching Redis.

    The stored message is `{"id","timestamp","domain",` (written by the script) + `middle` (the
    fields that never change, ending in ',') + the state tail that lua/_lib.lua owns:
    `"status",...,"completedAt"},"eqScore":N}` with botParams, else `"eqScore":N}`."""

    id: str
    key: str
    kind: str  # keys.CONV or keys.GODMODE
    partition: keys.Partition
    human_user: str
    human_color: str
    middle: bytes
    status: str  # '' (no botParams) | 'pending' | 'complete'
    domain: str  # "" = inherit from reply_to
    reply_to: str
    is_ai: bool
    eq_score: int
    queue_rank_base: int | None
    context: bytes  # b"" = none
    session_member: str  # "" unless a God Mode session


def stored_member(plan: AppendPlan, ts: int, domain: str, attempts: int = 0) -> bytes:
    """The stored message for `plan` at `ts`, byte for byte what lua/append_message.lua writes (its
    state tail is lua/_lib.lua's state_tail; a test holds the two together). For writers that keep a
    message's own timestamp (import-legacy)."""
    head = b'{"id":"%s","timestamp":%d,"domain":"%s",' % (plan.id.encode(), ts, domain.encode())
    if plan.status == "":
        return head + plan.middle + b'"eqScore":%d}' % plan.eq_score
    completed = b"%d" % ts if plan.status == "complete" else b"null"
    return head + plan.middle + (b'"status":"%s","claimedBy":null,"claimedAt":null,"attempts":%d,"completedAt":%s},'
                                 b'"eqScore":%d}' % (plan.status.encode(), attempts, completed, plan.eq_score))


def _split_ais(ais: str) -> tuple[str, str]:
    name, sep, ai_color = ais.partition(":")
    key_part(name, "botParams.ais")
    if not sep:
        return name, keys.DEFAULT_AI_COLOR
    return name, key_part(ai_color, "botParams.ais")


def plan_append(body: dict[str, Any], settings: Settings) -> AppendPlan:
    text = _str(body, "text", required=True)
    if not text:
        raise BadRequest("text", "must not be empty")
    username = key_part(_str(body, "username", required=True), "username")
    user_color = color(_str(body, "color", required=True), "color")

    message_id = body.get("id")
    message_id = new_id() if message_id in (None, "") else ident(_str(body, "id"), "id")

    mtype = _str(body, "message-type")
    if mtype is None:
        mtype = _str(body, "messageType")
    mtype = mtype or "human"
    if mtype.lower() == "ai":
        mtype, is_ai = "AI", True
    elif mtype.lower() == "human":
        mtype, is_ai = "human", False
    else:
        raise BadRequest("message-type", "must be 'human' or 'AI'")

    domain = _str(body, "domain") or ""
    if domain and not DOMAIN_RE.fullmatch(domain):
        raise BadRequest("domain", "must be a host name (letters, digits, '.', '-', ':', '_')")
    reply_to = _str(body, "replyTo") or ""
    if reply_to:
        ident(reply_to, "replyTo")

    eq_score = body.get("eqScore")
    eq_score = 0 if eq_score is None else _int_in(eq_score, "eqScore", 0, 100)

    context = body.get("context")
    context_bytes = b""
    if context is not None:
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise BadRequest("context", "must be an array of strings")
        if len(context) > CONTEXT_MAX_ITEMS:
            raise BadRequest("context", f"must have at most {CONTEXT_MAX_ITEMS} items")
        context_bytes = encode(context)

    params = body.get("botParams")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("botParams", "must be an object")
    params = params or {}
    entity = _str(params, "entity", "botParams.entity")
    priority = params.get("priority")
    if priority is None:
        priority = body.get("priority")
    priority = 5 if priority is None else _int_in(priority, "botParams.priority", 0, 99)
    ais = _str(params, "ais", "botParams.ais")
    session_id = _str(params, "sessionId", "botParams.sessionId")
    if session_id:
        ident(session_id, "botParams.sessionId")

    if is_ai:
        human_user = key_part(_str(params, "humanUsername", "botParams.humanUsername"), "botParams.humanUsername")
        human_color = color(_str(params, "humanColor", "botParams.humanColor"), "botParams.humanColor")
        ai_user, ai_color = username, user_color
    else:
        human_user, human_color = username, user_color
        if ais:
            ai_user, ai_color = _split_ais(ais)
        elif entity:
            ai_user, ai_color = key_part(entity, "botParams.entity"), keys.DEFAULT_AI_COLOR
        else:
            ai_user, ai_color = keys.PLATFORM, keys.PLATFORM

    member = ""
    partition = keys.partition_of(human_user, human_color, settings.partitions, settings.cluster)
    if entity == GOD_MODE_ENTITY and session_id:
        kind = keys.GODMODE
        key = keys.godmode_key(human_user, human_color, ai_user, ai_color, session_id, partition.key_suffix)
        member = keys.session_member(ai_user, ai_color, session_id)
    else:
        kind = keys.CONV
        key = keys.conv_key(human_user, human_color, ai_user, ai_color, partition.key_suffix)

    fixed: dict[str, Any] = {
        "text": text,
        "username": username,
        "color": user_color,
        "message-type": mtype,
        "replyTo": reply_to or None,
    }
    queued = not is_ai and bool(entity)
    status = ""
    if entity:
        status = "complete" if is_ai else "pending"
        fixed["botParams"] = {
            "priority": priority,
            "entity": entity,
            "ais": ais,
            "sessionId": session_id or None,
            "humanUsername": human_user,
            "humanColor": human_color,
        }
        middle = encode(fixed)[1:-2] + b","  # drop '{' and '}}': the state tail closes botParams
    else:
        middle = encode(fixed)[1:-1] + b","
    return AppendPlan(
        id=message_id,
        key=key,
        kind=kind,
        partition=partition,
        human_user=human_user,
        human_color=human_color,
        middle=middle,
        status=status,
        domain=domain,
        reply_to=reply_to,
        is_ai=is_ai,
        eq_score=eq_score,
        queue_rank_base=keys.queue_rank_base(priority) if queued else None,
        context=context_bytes if queued else b"",
        session_member=member,
    )


# ---------------------------------------------------------------------------------------------
# Query strings


def query_int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter, clamped to [low, high]; non-numeric is a 400."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not INT_RE.fullmatch(raw):
        raise BadRequest(name, "must be an integer")
    return max(low, min(high, int(raw)))


TYPE_MARKS = {"human": b'"message-type":"human"', "ai": b'"message-type":"AI"'}


@dataclass(frozen=True, slots=True)
class PollQuery:
    positions: tuple[int, ...]  # per partition: the newest timestamp the client has
    limit: int
    type_mark: bytes | None  # only messages containing it
    reset: bool  # a cursor of another partition count: resumed from its lowest position


def poll_query(params: Mapping[str, str], partitions: int) -> PollQuery:
    cursor = params.get("cursor")
    name = "after" if params.get("after") not in (None, "") else "since"
    after = query_int(params, name, 0, -1, MAX_TS)  # checked even when a cursor wins: bad input is a 400
    if cursor:
        try:
            positions, reset = feed.decode_cursor(cursor, partitions)
        except ValueError:
            raise BadRequest("cursor", "is not a cursor this service issued") from None
    else:
        positions, reset = (after,) * partitions, False
    limit = query_int(params, "limit", 200, 1, 1000)
    raw_type = params.get("type")
    type_mark = None
    if raw_type not in (None, ""):
        type_mark = TYPE_MARKS.get(raw_type.lower())
        if type_mark is None:
            raise BadRequest("type", "must be 'human' or 'AI'")
    return PollQuery(positions, limit, type_mark, reset)


def pair_query(params: Mapping[str, str], *, ai_required: bool = True) -> tuple[str, str, str | None, str | None]:
    human_user = key_part(params.get("humanUsername"), "humanUsername")
    human_color = key_part(params.get("humanColor"), "humanColor")
    ai_user = params.get("aiUsername") or None
    ai_color = params.get("aiColor") or None
    if ai_required or ai_user is not None or ai_color is not None:
        ai_user = key_part(ai_user, "aiUsername")
        ai_color = key_part(ai_color, "aiColor")
    return human_user, human_color, ai_user, ai_color


# ---------------------------------------------------------------------------------------------
# Responses assembled from what Store read


def session_summary(human_user: str, human_color: str, row: SessionRow) -> dict[str, Any]:
    ai_user, ai_color, session_id = row.member.split(":", 2)
    first = decode(row.first)
    meta = decode(row.meta) if row.meta else {}
    if first.get("message-type") == "human":
        question = first.get("text")
    elif row.replied:
        question = decode(row.replied).get("text")
    else:
        question = meta.get("humanQuestion") if isinstance(meta, dict) else None
    return {
        "sessionId": session_id,
        "key": row.key or keys.godmode_key(human_user, human_color, ai_user, ai_color, session_id),
        "humanUsername": human_user,
        "humanColor": human_color,
        "aiUsername": ai_user,
        "aiColor": ai_color,
        "firstTimestamp": first.get("timestamp"),
        "lastTimestamp": row.last_timestamp,
        "messageCount": row.count,
        "bytes": row.byte_count,
        "question": question,
    }


def stats_body(counters: dict[str, int]) -> dict[str, Any]:
    return {
        "keys": {"conv": counters.get("convKeys", 0), "godmode": counters.get("godmodeKeys", 0)},
        "messages": counters.get("messages", 0),
        "bytes": counters.get("bytes", 0),
        "pending": counters.get("pending", 0),
        "processing": counters.get("processing", 0),
        "globalScore": counters.get("globalScore", 0),
    }


# ---------------------------------------------------------------------------------------------
# Queue and score bodies


def worker_id(body: Mapping[str, Any]) -> str:
    value = _str(body, "workerId")
    if not value:
        raise BadRequest("workerId", "is required")
    if len(value) > 128:
        raise BadRequest("workerId", "must be at most 128 characters")
    return value


def claim_token(body: Mapping[str, Any]) -> str:
    """The claimToken a claim answered with; '' when absent (complete then acts on any claim)."""
    value = _str(body, "claimToken")
    return "" if value in (None, "") else ident(value, "claimToken")


def message_id(body: Mapping[str, Any], field: str = "messageId") -> str:
    return ident(_str(body, field), field)


def eq_score(body: Mapping[str, Any]) -> int:
    if body.get("eqScore") is None:
        raise BadRequest("eqScore", "is required")
    return _int_in(body["eqScore"], "eqScore", 0, 100)


@dataclass(frozen=True, slots=True)
class SessionMeta:
    session_id: str
    key: str
    data: bytes
    message_count: int


def session_meta(body: Mapping[str, Any], settings: Settings) -> SessionMeta:
    session_key = _str(body, "sessionKey")
    if not session_key or not session_key.startswith(keys.SESSION_META_PREFIX):
        raise BadRequest("sessionKey", f"must be '{keys.SESSION_META_PREFIX}<sessionId>'")
    session_id = ident(session_key[len(keys.SESSION_META_PREFIX) :], "sessionKey")
    data = body.get("sessionData")
    if not isinstance(data, dict):
        raise BadRequest("sessionData", "must be an object")
    if data.get("sessionId") not in (None, session_id):
        raise BadRequest("sessionData.sessionId", "must match the id in sessionKey")
    ids = data.get("messageIds")
    if ids is not None and not isinstance(ids, list):
        raise BadRequest("sessionData.messageIds", "must be an array")
    encoded = encode(data)
    if len(encoded) > settings.max_session_meta_bytes:
        raise PayloadTooLarge(
            "sessionData is larger than the limit", field="sessionData", limit=settings.max_session_meta_bytes
        )
    return SessionMeta(session_id, keys.session_meta_key(session_id), encoded, len(ids or ()))
