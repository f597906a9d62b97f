"""The HTTP contract as msgspec types: request bodies, query strings, the stored message and the
answers. openapi.py describes the API from these same types. Pure: no I/O.

Types check what one field can say; the rules between fields are short code beside them. Anything
that fails raises BadRequest naming the field, so a bad request writes nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Raw, Struct, field

from . import feed, keys, sessions
from .config import Settings
from .errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from .scripts import SessionRow

T = TypeVar("T")

COLOR_RE = re.compile(r"[0-9]{9}(?:-[A-Za-z0-9]{10})?")  # [0-9], not \d: \d also takes Arabic-Indic digits
DOMAIN_RE = keys.DOMAIN_RE
MAX_TS = 2**53  # timestamps are JSON numbers; past this a double loses integers
CONTEXT_MAX_ITEMS = 200
GOD_MODE_ENTITY = "god-mode"

encode = msgspec.json.encode
_decoder = msgspec.json.Decoder()


def decode(raw: bytes) -> Any:
    return _decoder.decode(raw)


# ---------------------------------------------------------------------------------------------
# Field types. A pattern is also the OpenAPI document's, so it is written for both dialects.

_MESSAGES: dict[str, str] = {}  # repr(pattern), as msgspec's errors quote it -> what a 400 says instead


def anchored(regex: str, *, or_empty: bool = False) -> str:
    # msgspec searches; `$` alone also matches before a final "\n" in Python (not in ECMA-262).
    return f"^(?:{regex}){'?' if or_empty else ''}$(?!\n)"


def _text(regex: str, must_be: str, *, or_empty: bool = False) -> Meta:
    pattern = anchored(regex, or_empty=or_empty)
    _MESSAGES[repr(pattern)] = must_be + (" (or '' for none)" if or_empty else "")
    return Meta(pattern=pattern, description=_MESSAGES[repr(pattern)])


_KEY_PART = f"1-{keys.KEY_PART_MAX} characters without ':', '*', '?', '[', ']', '\\', '{{', '}}' or control characters"
_ID = "1-64 characters of A-Z, a-z, 0-9, '_' or '-'"
_COLOR = "9 digits, optionally followed by '-' and 10 letters or digits"
_TYPE = "[Hh][Uu][Mm][Aa][Nn]|[Aa][Ii]"  # no inline (?i): ECMA-262 has none

KeyPart = Annotated[str, _text(keys.KEY_PART_RE.pattern, _KEY_PART)]
KeyPartOrEmpty = Annotated[str, _text(keys.KEY_PART_RE.pattern, _KEY_PART, or_empty=True)]
Id = Annotated[str, _text(keys.ID_RE.pattern, _ID)]
IdOrEmpty = Annotated[str, _text(keys.ID_RE.pattern, _ID, or_empty=True)]
Color = Annotated[str, _text(COLOR_RE.pattern, _COLOR)]
Domain = Annotated[str, _text(DOMAIN_RE.pattern, "a host name (letters, digits, '.', '-', ':', '_')", or_empty=True)]
Ais = Annotated[str, _text(f"{keys.KEY_PART_RE.pattern}(?::{keys.KEY_PART_RE.pattern})?",
                           "'{aiUsername}:{aiColor}', color optional", or_empty=True)]
MessageType = Annotated[str, _text(_TYPE, "'human' or 'AI', any case", or_empty=True)]
SessionKey = Annotated[str, _text(keys.SESSION_META_PREFIX + keys.ID_RE.pattern, f"'{keys.SESSION_META_PREFIX}<id>'")]
QueryInt = Annotated[str, _text("-?[0-9]{1,30}", "an integer", or_empty=True)]  # clamped to a range, not refused
# A JSON integer, or a number with no fraction such as 5.0 (JSON Schema's "integer"): floats that
# are multiples of 1. Read with int().
Score = Annotated[float, Meta(ge=0, le=100, multiple_of=1, extra_json_schema={"type": "integer"})]
Priority = Annotated[float, Meta(ge=0, le=99, multiple_of=1, extra_json_schema={"type": "integer"})]
WorkerId = Annotated[str, Meta(min_length=1, max_length=128)]


# ---------------------------------------------------------------------------------------------
# Decoding and its errors

_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_NO_MATCH = re.compile(r"Expected `str` matching regex (.*)", re.DOTALL)


def _bad(exc: msgspec.ValidationError, prefix: str) -> BadRequest:
    message, _, at = str(exc).partition(" - at `$")
    path = [p for p in re.sub(r"\[[^]]*\]", "", at.rstrip("`")).split(".") if p]  # `$.context[3]` -> context
    if missing := _MISSING.match(message):
        path.append(missing[1])
        message = "is required"
    elif unmatched := _NO_MATCH.match(message):
        message = "must be " + _MESSAGES.get(unmatched[1], f"matching {unmatched[1]}")
    return BadRequest(".".join([prefix, *path] if prefix else path) or "body", message)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def load_json(raw: bytes, type_: type[T], field: str = "") -> T:
    """`raw` as a `type_`; `field` names where it sits (errors say `field.x`), '' for the body."""
    decoder = _decoders.get(type_) or _decoders.setdefault(type_, msgspec.json.Decoder(type_))
    try:
        if isinstance(raw, bytes) and not raw.isascii():
            raw.decode()  # msgspec skips unknown fields unread: bad UTF-8 there is still not JSON
        value: T = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _bad(exc, field) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec reports bad UTF-8 as the latter
        raise BadRequest(field or "body", f"is not valid JSON ({exc})") from None
    except RecursionError:  # msgspec's nesting limit: ~1000 levels, a 2 KB body
        raise BadRequest(field or "body", "is nested too deeply") from None
    return value


def load(type_: type[T], data: Mapping[str, Any]) -> T:
    """`data` (a query string, or a body already decoded) as a `type_`."""
    try:
        return msgspec.convert(dict(data), type_)
    except msgspec.ValidationError as exc:
        raise _bad(exc, "") from None


def _single(pattern: re.Pattern[str], must_be: str) -> Callable[[str | None, str], str]:
    """A check of one value outside a body: path parameters, key parts read back by the CLI and import-legacy."""
    def check(value: str | None, field: str) -> str:
        if not value:
            raise BadRequest(field, "is required")
        if not pattern.fullmatch(value):
            raise BadRequest(field, "must be " + must_be)
        return value
    return check


key_part = _single(keys.KEY_PART_RE, _KEY_PART)
color = _single(COLOR_RE, _COLOR)
ident = _single(keys.ID_RE, _ID)


_ID_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


def new_id() -> str:
    """11 characters of [a-z0-9], like the frontend's ids (bytes >= 252 are redrawn: no modulo bias)."""
    out = bytearray()
    while len(out) < 11:
        out += bytes(_ID_ALPHABET[b % 36] for b in secrets.token_bytes(12) if b < 252)
    return out[:11].decode()


# ---------------------------------------------------------------------------------------------
# The stored message. Its field order is the byte format: lua/append_message.lua writes the head
# (id, timestamp, domain), lua/_lib.lua owns the mutable tail (status ... eqScore) and rewrites it
# in place; tests/unit/test_store.py checks that both scripts write exactly what this encodes.


class MessageBotParams(Struct, kw_only=True):
    priority: int
    entity: str
    ais: str | None
    sessionId: str | None
    humanUsername: str
    humanColor: str
    status: Literal["pending", "processing", "complete"]  # the tail from here on is lua/_lib.lua's
    claimedBy: str | None = None
    claimedAt: int | None = None
    attempts: int = 0
    completedAt: int | None = None


class Message(Struct, kw_only=True, omit_defaults=True):
    id: str
    timestamp: int
    domain: str
    text: str
    username: str
    color: str
    message_type: Literal["human", "AI"] = field(name="message-type")
    replyTo: str | None
    botParams: MessageBotParams | None = None  # only messages of a bot conversation
    eqScore: int



# ---------------------------------------------------------------------------------------------
# POST /api/comments


class CommentBotParams(Struct):
    entity: KeyPartOrEmpty | None = None
    priority: Priority | None = None
    ais: Ais | None = None
    sessionId: IdOrEmpty | None = None
    humanUsername: KeyPart | None = None  # required on an AI message (AI_NAMES_HUMAN)
    humanColor: Color | None = None


class Comment(Struct):
    """A message as the frontend or the bot posts it. Unknown fields (`timestamp`, `misc`, ...) are
    ignored; null and '' mean absent for every optional field."""

    text: Annotated[str, Meta(min_length=1)]
    username: KeyPart
    color: Color
    id: IdOrEmpty | None = None  # the server makes one when absent
    message_type: MessageType | None = field(name="message-type", default=None)
    messageType: MessageType | None = None  # read only when message-type is absent or null
    domain: Domain | None = None  # absent: the replied-to message's, else DEFAULT_DOMAIN
    replyTo: IdOrEmpty | None = None
    eqScore: Score | None = None
    priority: Priority | None = None  # read only when botParams.priority is absent or null
    context: Annotated[list[str], Meta(max_length=CONTEXT_MAX_ITEMS)] | None = None
    botParams: CommentBotParams | None = None


# What plan_append checks that the types cannot, in JSON Schema for the OpenAPI document.
_IS_AI = {"type": "string", "pattern": "^[Aa][Ii]$"}
AI_NAMES_HUMAN: dict[str, Any] = {
    "if": {"anyOf": [{"required": ["message-type"], "properties": {"message-type": _IS_AI}},
                     {"required": ["messageType"],
                      "properties": {"message-type": {"type": "null"}, "messageType": _IS_AI}}]},
    "then": {"required": ["botParams"],
             "properties": {"botParams": {"type": "object", "required": ["humanUsername", "humanColor"],
                                          "properties": {"humanUsername": {"type": "string"},
                                                         "humanColor": {"type": "string"}}}}},
}


class AppendPlan(Struct, frozen=True):  # a Struct, not a dataclass: 16 fields init in 0.3 µs, not 3
    """Everything the append script needs, decided before touching Redis. `message` is the stored
    message at timestamp 0 in domain ''; the script gets the bytes between its head and its tail."""

    id: str
    key: str
    kind: str  # keys.CONV or keys.GODMODE
    partition: keys.Partition
    human_user: str
    human_color: str
    message: Message
    middle: bytes  # the stored JSON after `"domain":"...",` up to the state tail, ending in ','
    status: str  # '' (no botParams) | 'pending' | 'complete'
    domain: str  # "" = inherit from reply_to
    reply_to: str
    is_ai: bool
    eq_score: int
    queue_rank_base: int | None
    context: bytes  # b"" = none
    session_member: str  # "" unless a God Mode session


def _middle(message: Message) -> bytes:
    raw = encode(message)
    head = b'{"id":"%s","timestamp":0,"domain":"",' % message.id.encode()  # an id needs no escaping
    tail = b'"status":"' if message.botParams is not None else b'"eqScore":'
    assert raw.startswith(head)
    return raw[len(head) : raw.rindex(tail)]  # user strings hold no bare '"': the last match is the tail


def stored_member(plan: AppendPlan, ts: int, domain: str, attempts: int = 0) -> bytes:
    """The stored message for `plan` at `ts`: what lua/append_message.lua writes, for writers that
    keep a message's own timestamp (import-legacy, which may also change the status)."""
    params = plan.message.botParams
    if params is not None:
        params = msgspec.structs.replace(params, status=plan.status, attempts=attempts,
                                         completedAt=ts if plan.status == "complete" else None)
    return encode(msgspec.structs.replace(plan.message, timestamp=ts, domain=domain, botParams=params))


def plan_append(body: Comment | Mapping[str, Any], settings: Settings) -> AppendPlan:
    if not isinstance(body, Comment):
        body = load(Comment, body)
    params = body.botParams or CommentBotParams()
    mtype = body.message_type if body.message_type is not None else body.messageType
    is_ai = (mtype or "").lower() == "ai"
    entity = params.entity or ""
    priority = params.priority if params.priority is not None else body.priority
    priority = 5 if priority is None else int(priority)
    session_id = params.sessionId or None

    if is_ai:
        if params.humanUsername is None:
            raise BadRequest("botParams.humanUsername", "is required on an AI message")
        if params.humanColor is None:
            raise BadRequest("botParams.humanColor", "is required on an AI message")
        human_user, human_color = params.humanUsername, params.humanColor
        ai_user, ai_color = body.username, body.color
    else:
        human_user, human_color = body.username, body.color
        if params.ais:
            ai_user, _, ai_color = params.ais.partition(":")
            ai_color = ai_color or keys.DEFAULT_AI_COLOR
        elif entity:
            ai_user, ai_color = entity, keys.DEFAULT_AI_COLOR
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

    status: Literal["", "pending", "complete"] = ("complete" if is_ai else "pending") if entity else ""
    message_id = body.id or new_id()
    eq_score = int(body.eqScore or 0)
    message = Message(
        id=message_id, timestamp=0, domain="", text=body.text, username=body.username, color=body.color,
        message_type="AI" if is_ai else "human", replyTo=body.replyTo or None, eqScore=eq_score,
        botParams=MessageBotParams(priority=priority, entity=entity, ais=params.ais, sessionId=session_id,
                                   humanUsername=human_user, humanColor=human_color, status=status,
                                   completedAt=0 if status == "complete" else None) if status else None,
    )
    queued = status == "pending"
    return AppendPlan(
        id=message_id,
        key=key,
        kind=kind,
        partition=partition,
        human_user=human_user,
        human_color=human_color,
        message=message,
        middle=_middle(message),
        status=status,
        domain=body.domain or "",
        reply_to=body.replyTo or "",
        is_ai=is_ai,
        eq_score=eq_score,
        queue_rank_base=keys.queue_rank_base(priority) if queued else None,
        context=encode(body.context) if queued and body.context is not None else b"",
        session_member=member,
    )


# ---------------------------------------------------------------------------------------------
# Other bodies


class ScoreBody(Struct):
    eqScore: Score


class ClaimNextBody(Struct):
    workerId: WorkerId


class ClaimBody(Struct):
    messageId: Id
    workerId: WorkerId


class CompleteBody(Struct):
    messageId: Id
    claimToken: IdOrEmpty | None = None  # the token a claim answered with; absent: any claim


class SessionData(Struct):
    """The bot's session metadata: stored as given; only these two fields are read."""

    sessionId: str | None = None  # absent, null, or the id in sessionKey
    messageIds: list[Any] | None = None


class SessionMetaBody(Struct):
    sessionKey: SessionKey
    sessionData: Annotated[Raw, Meta(extra_json_schema={"$ref": "#/components/schemas/SessionData"})]


@dataclass(frozen=True, slots=True)
class SessionMeta:
    session_id: str
    key: str
    data: bytes
    message_count: int


def session_meta(body: SessionMetaBody | Mapping[str, Any], settings: Settings) -> SessionMeta:
    if not isinstance(body, SessionMetaBody):
        body = load_json(encode(body), SessionMetaBody)
    session_id = body.sessionKey[len(keys.SESSION_META_PREFIX) :]
    data = load_json(body.sessionData, SessionData, "sessionData")
    if data.sessionId not in (None, session_id):
        raise BadRequest("sessionData.sessionId", "must match the id in sessionKey")
    raw = bytes(body.sessionData)
    if len(raw) > settings.max_session_meta_bytes:
        raise PayloadTooLarge(
            "sessionData is larger than the limit", field="sessionData", limit=settings.max_session_meta_bytes
        )
    return SessionMeta(session_id, keys.session_meta_key(session_id), raw, len(data.messageIds or ()))


# ---------------------------------------------------------------------------------------------
# Query strings: every value is a string; '' is the same as absent. Integers are clamped.


def _clamp(raw: str, default: int, low: int, high: int) -> int:
    return default if raw == "" else max(low, min(high, int(raw)))


class PollParams(Struct):
    after: Annotated[QueryInt, Meta(description="Only messages with a timestamp above this; clamped to "
                                                "[-1, 2^53] (default 0).")] = ""
    since: Annotated[QueryInt, Meta(description="Old name of `after`, read when `after` is absent.")] = ""
    cursor: Annotated[str, Meta(pattern=feed.CURSOR_PATTERN, description="The previous page's `cursor`: "
                                "resumes exactly there, whatever `after` says.")] = ""
    limit: Annotated[QueryInt, Meta(description="Page size, clamped to [1, 1000] (default 200).")] = ""
    type: Annotated[MessageType, Meta(description="Only 'human' or only 'AI' messages, any case.")] = ""
    includeGodMode: Annotated[str, Meta(description="Ignored: the stream always includes God Mode.")] = ""


TYPE_MARKS = {"human": b'"message-type":"human"', "ai": b'"message-type":"AI"'}


@dataclass(frozen=True, slots=True)
class PollQuery:
    positions: tuple[int, ...]  # per partition: the newest timestamp the client has
    limit: int
    type_mark: bytes | None  # only messages containing it
    reset: bool  # a cursor of another partition count: resumed from its lowest position


def poll_query(params: Mapping[str, str], partitions: int) -> PollQuery:
    q = load(PollParams, params)
    after = _clamp(q.after or q.since, 0, -1, MAX_TS)
    if q.cursor:
        try:
            positions, reset = feed.decode_cursor(q.cursor, partitions)
        except ValueError:
            raise BadRequest("cursor", "is not a cursor this service issued") from None
    else:
        positions, reset = (after,) * partitions, False
    return PollQuery(positions, _clamp(q.limit, 200, 1, 1000), TYPE_MARKS.get(q.type.lower()), reset)


class SessionParams(Struct):
    humanUsername: KeyPart
    humanColor: KeyPart
    aiUsername: Annotated[KeyPartOrEmpty, Meta(description="Give aiUsername and aiColor both or neither.")] = ""
    aiColor: Annotated[KeyPartOrEmpty, Meta(description="Give aiUsername and aiColor both or neither.")] = ""


class OneSessionParams(SessionParams, kw_only=True):
    sessionId: Id


class SessionListParams(SessionParams, kw_only=True):
    limit: Annotated[QueryInt, Meta(description=f"Page size, clamped to [1, {sessions.PAGE_MAX}] "
                                                f"(default {sessions.PAGE_DEFAULT}).")] = ""
    cursor: Annotated[str, Meta(pattern=sessions.CURSOR_PATTERN, description="The previous page's `cursor`.")] = ""


def sessions_query(params: Mapping[str, str]) -> tuple[str, str, str | None, str | None, int, tuple[str, str] | None]:
    """(humanUsername, humanColor, aiUsername, aiColor, limit, after) of a session listing."""
    human_user, human_color, ai_user, ai_color = pair_query(params, ai_required=False)
    q = load(SessionListParams, params)
    return (human_user, human_color, ai_user, ai_color, _clamp(q.limit, sessions.PAGE_DEFAULT, 1, sessions.PAGE_MAX),
            sessions.cursor_query(params))


class ConversationParams(Struct):
    humanUsername: KeyPart
    humanColor: KeyPart
    aiUsername: KeyPart
    aiColor: KeyPart
    after: Annotated[QueryInt, Meta(description="Only messages with a timestamp above this; clamped to "
                                                "[-1, 2^53] (default 0).")] = ""
    limit: Annotated[QueryInt, Meta(description="The newest `limit` after `after`, oldest first; clamped to "
                                                "[1, 1000] (default 100).")] = ""


def pair_query(params: Mapping[str, str], *, ai_required: bool = True) -> tuple[str, str, str | None, str | None]:
    if ai_required:
        c = load(ConversationParams, params)
        return c.humanUsername, c.humanColor, c.aiUsername, c.aiColor
    q = load(SessionParams, params)
    if bool(q.aiUsername) != bool(q.aiColor):
        raise BadRequest("aiColor" if q.aiUsername else "aiUsername", "is required with the other AI field")
    return q.humanUsername, q.humanColor, q.aiUsername or None, q.aiColor or None


def conversation_query(params: Mapping[str, str]) -> tuple[str, str, str, str, int, int]:
    q = load(ConversationParams, params)
    return (q.humanUsername, q.humanColor, q.aiUsername, q.aiColor, _clamp(q.after, 0, -1, MAX_TS),
            _clamp(q.limit, 100, 1, 1000))


class PendingParams(Struct):
    limit: Annotated[QueryInt, Meta(description="Clamped to [1, 1000] (default 10).")] = ""


def pending_limit(params: Mapping[str, str]) -> int:
    return _clamp(load(PendingParams, params).limit, 10, 1, 1000)


LIST_KEYS_MAX = 1000  # a page is one SCAN: bounded work per request


class ListKeysParams(Struct):
    prefix: Annotated[str, Meta(description="conv, godmode, or a key prefix starting with one of them.")] = ""
    cursor: Annotated[str, Meta(description="The `cursor` of the previous page.")] = ""
    limit: Annotated[QueryInt, Meta(description=f"SCAN COUNT hint, clamped to [1, {LIST_KEYS_MAX}] "
                                                "(default 100).")] = ""


def list_keys_query(params: Mapping[str, str]) -> tuple[str | None, str | None, int]:
    q = load(ListKeysParams, params)
    return params.get("prefix"), q.cursor or None, _clamp(q.limit, 100, 1, LIST_KEYS_MAX)


# ---------------------------------------------------------------------------------------------
# Answers. A stored message goes out as the bytes Redis holds (Raw): never decoded and re-encoded.

StoredRaw = Annotated[Raw, Meta(extra_json_schema={"$ref": "#/components/schemas/Message"})]
QueuedMessage = Annotated[dict[str, Any], Meta(extra_json_schema={"allOf": [
    {"$ref": "#/components/schemas/Message"},
    {"properties": {"context": {"type": "array", "items": {"type": "string"}}}, "required": ["context"]}]})]


class Posted(Struct):
    id: str
    timestamp: int
    status: Literal["success", "duplicate"]
    key: str


class PollPage(Struct, omit_defaults=True):
    messages: list[StoredRaw]
    nextAfter: int
    hasMore: bool
    globalScore: int
    cursor: str
    reset: bool  # messages after the client's position are no longer held: the page starts at the oldest held
    version: str | None = None  # CLIENT_VERSION, when set


class Scored(Struct):
    success: bool
    message: StoredRaw
    globalScore: int


class ClaimNextAnswer(Struct, kw_only=True, omit_defaults=True):
    success: bool
    message: QueuedMessage | None
    reason: Literal["no_pending_messages"] | None = None  # when there was nothing to claim
    claimToken: str | None = None  # when claimed
    totalPending: int
    remainingPending: int


class Claimed(Struct):
    success: bool
    message: QueuedMessage
    claimToken: str


class Done(Struct):
    success: bool


class QueueCounts(Struct):
    pending: int
    processing: int
    returned: int


class PendingAnswer(Struct):
    pending: list[QueuedMessage]
    platformOnly: list[Any]
    truncated: bool
    kvStats: QueueCounts


class SessionSummary(Struct):
    sessionId: str
    key: str
    humanUsername: str
    humanColor: str
    aiUsername: str
    aiColor: str
    firstTimestamp: int | None
    lastTimestamp: int | None
    messageCount: int
    bytes: int
    question: str | None


class SessionList(Struct):
    sessions: list[SessionSummary]
    total: int
    cursor: str | None  # the next page's; null: this was the last


class OneSession(Struct):
    session: SessionSummary
    messages: list[StoredRaw]
    messageCount: int
    truncated: bool  # the session holds more than sessions.SESSION_MAX_BYTES of messages: the first ones came


class SessionSaved(Struct):
    success: bool
    sessionKey: str
    messageCount: int


class KeyCounts(Struct):
    conv: int
    godmode: int


class Stats(Struct):
    keys: KeyCounts
    messages: int
    bytes: int
    pending: int
    processing: int
    globalScore: int


class Purged(Struct):
    success: bool
    deletedKeys: int


class KeyPage(Struct):
    keys: list[str]
    count: int
    cursor: str | None  # null: the scan is complete


class Health(Struct):
    status: str


class Ready(Struct, omit_defaults=True):
    status: Literal["ok", "unavailable"]
    redis: bool
    error: str | None = None
    cluster: str | None = None  # REDIS_MODE=cluster: "ok", or "fail" while a master is unreachable or failing
    warning: str | None = None


class ErrorBody(Struct, omit_defaults=True):
    error: str
    field: str | None = None  # the offending input field of a 400


def session_summary(human_user: str, human_color: str, row: SessionRow) -> SessionSummary:
    ai_user, ai_color, session_id = row.member.split(":", 2)
    first = decode(row.first)
    meta = decode(row.meta) if row.meta else {}
    if first.get("message-type") == "human":
        question = first.get("text")
    elif row.replied:
        question = decode(row.replied).get("text")
    else:
        question = meta.get("humanQuestion") if isinstance(meta, dict) else None
    return SessionSummary(
        sessionId=session_id,
        key=row.key or keys.godmode_key(human_user, human_color, ai_user, ai_color, session_id),
        humanUsername=human_user,
        humanColor=human_color,
        aiUsername=ai_user,
        aiColor=ai_color,
        firstTimestamp=first.get("timestamp"),
        lastTimestamp=row.last_timestamp,
        messageCount=row.count,
        bytes=row.byte_count,
        question=question if isinstance(question, str) else None,
    )


def stats_body(counters: dict[str, int]) -> Stats:
    return Stats(KeyCounts(counters.get("convKeys", 0), counters.get("godmodeKeys", 0)), counters.get("messages", 0),
                 counters.get("bytes", 0), counters.get("pending", 0), counters.get("processing", 0),
                 counters.get("globalScore", 0))
