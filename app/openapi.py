"""The OpenAPI 3.1 description of every route in api.routes(), served at GET /openapi.json.

Built from the same constants the validation in models.py uses, so the two cannot drift apart on
a limit or a pattern. Where models.py checks something a schema cannot say (a field that is read
only for one message type, two fields that must match), the schema says as much as JSON Schema
can and the description says the rest. tests/reliability fuzzes every operation from this spec.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import keys, models, sessions
from .config import Settings
from .feed import CURSOR_PATTERN

Schema = dict[str, Any]

_INT_DIGITS = 30  # models.INT_RE: at most 30 digits, then clamped


def _anchored(regex: str) -> str:
    return f"^{regex}$"


def _nullable(schema: Schema) -> Schema:
    """A field models.py reads with `body.get(...)`: JSON null is the same as absent."""
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


def _or_empty(regex: str) -> str:
    """A pattern that also takes '' (models.py treats '' like absent for these fields)."""
    return f"^(?:{regex})?$"


KEY_PART: Schema = {
    "type": "string",
    "pattern": _anchored(keys.KEY_PART_RE.pattern),
    "minLength": 1,
    "maxLength": keys.KEY_PART_MAX,
    "description": "A key part: 1-64 characters without ':', '*', '?', '[', ']', '\\', '{', '}' or control characters.",
}
COLOR: Schema = {
    "type": "string",
    "pattern": _anchored(models.COLOR_RE.pattern),
    "description": "RRRGGGBBB: 9 digits, optionally followed by '-' and 10 letters or digits.",
}
ID: Schema = {"type": "string", "pattern": _anchored(keys.ID_RE.pattern), "minLength": 1, "maxLength": 64}
ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
}
QUERY_INT: Schema = {  # '' is the same as absent
    "anyOf": [
        {"type": "integer", "minimum": -(10**_INT_DIGITS - 1), "maximum": 10**_INT_DIGITS - 1},
        {"type": "string", "maxLength": 0},
    ]
}
ANY_OBJECT: Schema = {"type": "object"}
MESSAGE: Schema = {
    "type": "object",
    "required": ["id", "timestamp", "text", "username", "color", "message-type"],
    "properties": {
        "id": {"type": "string"},
        "timestamp": {"type": "integer"},
        "domain": {"type": "string"},
        "text": {"type": "string"},
        "username": {"type": "string"},
        "color": {"type": "string"},
        "message-type": {"enum": ["human", "AI"]},
        "replyTo": {"type": ["string", "null"]},
        "eqScore": {"type": "integer"},
        "botParams": ANY_OBJECT,
    },
}
MESSAGE_TYPE: Schema = {
    "type": ["string", "null"],
    "pattern": "^(?:[Hh][Uu][Mm][Aa][Nn]|[Aa][Ii])?$",
    "description": "'human' or 'AI', any case; '' or absent means human.",
}


def _int_field(low: int, high: int, description: str) -> Schema:
    return {"type": ["integer", "null"], "minimum": low, "maximum": high, "description": description}


def _query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _json(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: Schema, *codes: int, ok_description: str = "OK") -> Schema:
    out: Schema = {"200": {"description": ok_description, **_json(ok)}}
    for code in codes:
        out[str(code)] = {"description": _STATUS[code], **_json(ERROR)}
    out["503"] = {"description": "Redis is unreachable or failed; retry later", **_json(ERROR)}
    return out


_STATUS = {
    400: "Malformed input; `field` names the offending field",
    401: "Authorization header missing",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict with the message's current state",
    413: "Body or message larger than a limit",
    415: "Body is a form, not JSON",
}
_BODY_ERRORS = (400, 413, 415)


def _pair_params(*, ai_required: bool) -> list[Schema]:
    if ai_required:
        ai, note = KEY_PART, ""
    else:  # '' is the same as absent
        ai = {"anyOf": [KEY_PART, {"type": "string", "maxLength": 0}]}
        note = " Optional, but aiUsername and aiColor go together: give both or neither (400 otherwise)."
    return [
        _query("humanUsername", KEY_PART, "The human's username.", required=True),
        _query("humanColor", KEY_PART, "The human's color (any key part).", required=True),
        _query("aiUsername", ai, "The AI's username." + note, required=ai_required),
        _query("aiColor", ai, "The AI's color." + note, required=ai_required),
    ]


def _comment_body(settings: Settings) -> Schema:
    ais = f"{keys.KEY_PART_RE.pattern}(?::{keys.KEY_PART_RE.pattern})?"
    bot_params: Schema = {
        "type": ["object", "null"],
        "properties": {
            "entity": {"type": ["string", "null"], "description": "The AI entity; 'god-mode' with a sessionId writes to a session key."},
            "priority": _int_field(0, 99, "Queue priority, high first (default 5)."),
            "ais": {"type": ["string", "null"], "description": "'{aiUsername}:{aiColor}' (color optional) of the conversation."},
            "sessionId": {"type": ["string", "null"], "pattern": _or_empty(keys.ID_RE.pattern)},
            "humanUsername": {"description": "Read only on AI messages: required there, a key part."},
            "humanColor": {"description": "Read only on AI messages: required there, a color."},
        },
    }
    ai = {"anyOf": [{"type": "string", "pattern": "^[Aa][Ii]$"}]}
    is_ai: Schema = {  # the type models.py settles on: message-type, else messageType
        "anyOf": [
            {"required": ["message-type"], "properties": {"message-type": ai}},
            {
                "properties": {"message-type": {"type": "null"}, "messageType": ai},
                "required": ["messageType"],
            },
        ]
    }
    return {
        "type": "object",
        "required": ["text", "username", "color"],
        "properties": {
            "id": {"type": ["string", "null"], "pattern": _or_empty(keys.ID_RE.pattern),
                   "description": "The client's id; retries with the same id answer status 'duplicate'. Absent: the server makes one."},
            "text": {"type": "string", "minLength": 1},
            "username": KEY_PART,
            "color": COLOR,
            "message-type": MESSAGE_TYPE,
            "messageType": {"description": "Read only when message-type is absent or null: then as message-type."},
            "domain": {"type": ["string", "null"], "pattern": _or_empty(models.DOMAIN_RE.pattern),
                       "description": "The site posted from; absent on a reply: the replied-to message's domain."},
            "replyTo": {"type": ["string", "null"], "pattern": _or_empty(keys.ID_RE.pattern)},
            "eqScore": _int_field(0, 100, "Score 0-100 (default 0)."),
            "context": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": models.CONTEXT_MAX_ITEMS,
                        "description": "The bot's context (queued human messages only)."},
            "priority": {"description": "Read only when botParams.priority is absent or null: then as botParams.priority."},
            "botParams": bot_params,
            "timestamp": {"description": "Ignored: the server's clock stamps every message."},
        },
        "allOf": [
            {  # messageType stands in for message-type when that is absent or null
                "if": {"anyOf": [{"not": {"required": ["message-type"]}},
                                 {"required": ["message-type"], "properties": {"message-type": {"type": "null"}}}]},
                "then": {"properties": {"messageType": MESSAGE_TYPE}},
            },
            {  # body.priority stands in for botParams.priority when that is absent or null
                "if": {"anyOf": [
                    {"not": {"required": ["botParams"]}},
                    {"required": ["botParams"], "properties": {"botParams": {"type": "null"}}},
                    {"required": ["botParams"], "properties": {"botParams": {"anyOf": [
                        {"type": "object", "not": {"required": ["priority"]}},
                        {"type": "object", "required": ["priority"], "properties": {"priority": {"type": "null"}}},
                    ]}}},
                ]},
                "then": {"properties": {"priority": _int_field(0, 99, "Queue priority when botParams has none.")}},
            },
            {  # an AI message names the human whose conversation it answers
                "if": is_ai,
                "then": {
                    "required": ["botParams"],
                    "properties": {"botParams": {
                        "type": "object",
                        "required": ["humanUsername", "humanColor"],
                        "properties": {"humanUsername": KEY_PART, "humanColor": COLOR},
                    }},
                },
                "else": {  # a human message names its AI: ais, else entity
                    "properties": {"botParams": {"anyOf": [
                        {"type": "null"},
                        {"type": "object", "required": ["ais"],
                         "properties": {"ais": {"type": "string", "pattern": _anchored(ais)}}},
                        {"type": "object",
                         "not": {"required": ["ais"], "properties": {"ais": {"type": "string", "minLength": 1}}},
                         "properties": {"entity": {"anyOf": [{"type": "null"}, {"const": ""}, KEY_PART]}}},
                    ]}},
                },
            },
        ],
        "description": (
            f"A message as the frontend or the bot posts it. At most {settings.max_body_bytes} bytes of JSON; "
            f"the stored message at most {settings.max_key_bytes} bytes (413 past either). Other fields are ignored."
        ),
    }


def _poll_params() -> list[Schema]:
    return [
        _query("after", QUERY_INT, "Only messages with a timestamp above this (exclusive); clamped to [-1, 2^53]. "
                                   "Follow nextAfter to see every message once."),
        _query("since", {"type": "string"}, "Old name of `after`, read (as `after`) only when `after` is absent "
                                            "or empty: then it must be an integer."),
        _query("cursor", {"type": "string", "pattern": CURSOR_PATTERN}, "The `cursor` of the previous page: resumes exactly where it ended, "
                                             "whatever `after` says. Only cursors this service issued (else 400)."),
        _query("limit", QUERY_INT, "Page size; clamped to [1, 1000] (default 200)."),
        _query("type", {"type": "string", "pattern": "^(?:[Hh][Uu][Mm][Aa][Nn]|[Aa][Ii])?$"},
               "Only 'human' or only 'AI' messages, any case."),
        _query("includeGodMode", {"type": "string"}, "Accepted and ignored: the stream always includes God Mode."),
    ]


def _after_limit(default_limit: int) -> list[Schema]:
    return [
        _query("after", QUERY_INT, "Only messages with a timestamp above this; clamped to [-1, 2^53]."),
        _query("limit", QUERY_INT, f"The newest `limit` messages after `after`, oldest first; clamped to [1, 1000] "
                                   f"(default {default_limit})."),
    ]


def build_spec(settings: Settings) -> dict[str, Any]:
    poll = {
        "type": "object",
        "required": ["messages", "nextAfter", "hasMore", "globalScore", "cursor", "reset"],
        "properties": {
            "messages": {"type": "array", "items": MESSAGE},
            "nextAfter": {"type": "integer"},
            "hasMore": {"type": "boolean"},
            "globalScore": {"type": "integer"},
            "cursor": {"type": "string", "description": "Opaque: pass as ?cursor= to resume after this page."},
            "reset": {"type": "boolean", "description": "Messages after the client's position are no longer "
                                                        "held; the page starts at the oldest one still held."},
            "version": {"type": "string"},
        },
    }
    posted = {
        "type": "object",
        "required": ["id", "timestamp", "status", "key"],
        "properties": {"id": {"type": "string"}, "timestamp": {"type": "integer"},
                       "status": {"enum": ["success", "duplicate"]}, "key": {"type": "string"}},
    }
    session = {"type": "object", "properties": {"sessionId": {"type": "string"}, "key": {"type": "string"},
                                                "messageCount": {"type": "integer"}}}
    one_session = {"type": "object", "required": ["session", "messages", "messageCount", "truncated"],
                   "properties": {"session": session, "truncated": {
                       "type": "boolean", "description": f"The session holds more messages than the first "
                                                         f"{sessions.SESSION_MAX_BYTES} bytes answered."}}}
    worker = {"type": "string", "minLength": 1, "maxLength": 128}
    session_meta = {
        "type": "object",
        "required": ["sessionKey", "sessionData"],
        "properties": {
            "sessionKey": {"type": "string", "pattern": f"^{keys.SESSION_META_PREFIX}{keys.ID_RE.pattern}$"},
            "sessionData": {
                "type": "object",
                "properties": {
                    "sessionId": {"description": "Absent, null, or the id in sessionKey (400 otherwise)."},
                    "messageIds": {"type": ["array", "null"]},
                },
                "description": f"The bot's session metadata, stored as given; at most {settings.max_session_meta_bytes} bytes.",
            },
        },
    }
    paths: dict[str, Any] = {
        "/api/comments": {
            "get": {
                "operationId": "pollComments",
                "summary": "Global poll: messages after a cursor, oldest first",
                "parameters": _poll_params(),
                "responses": _responses(poll, 400),
            },
            "post": {
                "operationId": "postComment",
                "summary": "Store a message (idempotent by id)",
                "requestBody": {"required": True, **_json(_comment_body(settings))},
                "responses": _responses(posted, *_BODY_ERRORS),
            },
        },
        "/api/comments/{id}": {
            "patch": {
                "operationId": "scoreComment",
                "summary": "Set a message's eqScore",
                "parameters": [_path("id", ID)],
                "requestBody": {"required": True, **_json({
                    "type": "object", "required": ["eqScore"],
                    "properties": {"eqScore": {"type": "integer", "minimum": 0, "maximum": 100}},
                })},
                "responses": _responses(ANY_OBJECT, *_BODY_ERRORS, 404, 409),
            }
        },
        "/api/conversation": {
            "get": {
                "operationId": "getConversation",
                "summary": "One pair's messages (GodMode pairs include every session), a bare array oldest first",
                "parameters": _pair_params(ai_required=True) + _after_limit(100),
                "responses": _responses({"type": "array", "items": MESSAGE}, 400),
            }
        },
        "/api/godmode-conversation": {
            "get": {
                "operationId": "getGodmodeConversation",
                "summary": "One God Mode session with its messages",
                "parameters": [*_pair_params(ai_required=False),
                               _query("sessionId", ID, "The session id.", required=True)],
                "responses": _responses(one_session, 400, 404),
            }
        },
        "/api/godmode-session/{session_id}": {
            "get": {
                "operationId": "getGodmodeSession",
                "summary": "One God Mode session with its messages",
                "parameters": [_path("session_id", ID), *_pair_params(ai_required=False)],
                "responses": _responses(one_session, 400, 404),
            }
        },
        "/api/godmode-sessions": {
            "get": {
                "operationId": "listGodmodeSessions",
                "summary": "A human's God Mode sessions, newest first, one page at a time",
                "parameters": [*_pair_params(ai_required=False),
                               _query("limit", QUERY_INT, f"Page size; clamped to [1, {sessions.PAGE_MAX}] (default "
                                                          f"{sessions.PAGE_DEFAULT}). A page also stops at "
                                                          f"{sessions.PAGE_MAX_BYTES} bytes (its first session "
                                                          "always comes)."),
                               _query("cursor", {"type": "string", "pattern": sessions.CURSOR_PATTERN},
                                      "The `cursor` of the previous page. Only cursors this service issued "
                                      "(else 400).")],
                "responses": _responses({"type": "object", "required": ["sessions", "total", "cursor"],
                                         "properties": {"sessions": {"type": "array", "items": session},
                                                        "total": {"type": "integer"},
                                                        "cursor": {"type": ["string", "null"], "description":
                                                                   "Pass as ?cursor= for the next page; null "
                                                                   "when this page is the last."}}}, 400),
            }
        },
        "/api/godmode-session": {
            "post": {
                "operationId": "postGodmodeSession",
                "summary": "Store a session's metadata",
                "requestBody": {"required": True, **_json(session_meta)},
                "responses": _responses(ANY_OBJECT, *_BODY_ERRORS),
            }
        },
        "/api/queue/claim-next": {
            "post": {
                "operationId": "claimNext",
                "summary": "Claim the head of the queue (priority high first, then oldest)",
                "requestBody": {"required": True, **_json({"type": "object", "required": ["workerId"],
                                                           "properties": {"workerId": worker}})},
                "responses": _responses(ANY_OBJECT, *_BODY_ERRORS, 409),
            }
        },
        "/api/queue/claim": {
            "post": {
                "operationId": "claim",
                "summary": "Claim one pending message by id",
                "requestBody": {"required": True, **_json({"type": "object", "required": ["messageId", "workerId"],
                                                           "properties": {"messageId": ID, "workerId": worker}})},
                "responses": _responses(ANY_OBJECT, *_BODY_ERRORS, 404, 409),
            }
        },
        "/api/queue/complete": {
            "post": {
                "operationId": "complete",
                "summary": "Mark a pending or processing message complete",
                "requestBody": {"required": True, **_json({"type": "object", "required": ["messageId"],
                                                           "properties": {"messageId": ID, "claimToken": {
                                                               "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                                                               "description": "The claim's token: 409 when the "
                                                               "message was claimed again since."}}})},
                "responses": _responses(ANY_OBJECT, *_BODY_ERRORS, 404, 409),
            }
        },
        "/api/queue/pending": {
            "get": {
                "operationId": "pendingMessages",
                "summary": "The head of the queue (older bot builds)",
                "parameters": [_query("limit", QUERY_INT, "Clamped to [1, 1000] (default 10).")],
                "responses": _responses(ANY_OBJECT, 400),
            }
        },
        "/api/admin/stats": {
            "get": {"operationId": "adminStats", "summary": "Counters", "responses": _responses(ANY_OBJECT)}
        },
        "/api/admin/purge": {
            "post": {
                "operationId": "adminPurge",
                "summary": "Delete everything this service wrote (needs ADMIN_TOKEN)",
                "security": [{"adminToken": []}],
                "responses": _responses(ANY_OBJECT, 401, 403),
            }
        },
        "/api/admin/list-keys": {
            "get": {
                "operationId": "adminListKeys",
                "summary": "One SCAN page of conv:/godmode: keys (needs ADMIN_TOKEN); follow `cursor` until null",
                "security": [{"adminToken": []}],
                "parameters": [
                    _query("prefix", {"type": "string"}, "conv, godmode, or a key prefix starting with one of them."),
                    _query("cursor", {"type": "string"}, "The `cursor` of the previous page."),
                    _query("limit", QUERY_INT, "SCAN COUNT hint, clamped to [1, 1000] (default 100)."),
                ],
                "responses": _responses(ANY_OBJECT, 400, 401, 403),
            }
        },
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus text exposition",
                             "responses": {"200": {"description": "OK",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/healthz": {"get": {"operationId": "healthz", "summary": "The process answers",
                             "responses": {"200": {"description": "OK", **_json(ANY_OBJECT)}}}},
        "/readyz": {"get": {"operationId": "readyz", "summary": "Redis answers a PING",
                            "responses": _responses(ANY_OBJECT)}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                  "responses": {"200": {"description": "OK", **_json(ANY_OBJECT)}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "godmode-store", "version": "0.1.0",
                 "description": "Redis-backed message store for a multi-AI chat with God Mode sessions. "
                                "Every error is JSON with an `error` string."},
        "paths": paths,
        "components": {"securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}},
    }


_cached: tuple[Settings, bytes] | None = None


async def openapi_endpoint(request: Request) -> Response:
    global _cached
    settings: Settings = request.app.state.settings
    if _cached is None or _cached[0] is not settings:
        _cached = (settings, models.encode(build_spec(settings)))
    return Response(_cached[1], media_type="application/json")
