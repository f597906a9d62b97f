"""The OpenAPI 3.1 document, served at GET /openapi.json: the schemas are models.py's types (the
ones requests are decoded with and answers encoded with), the paths a table. tests/reliability
fuzzes every operation from it."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from . import keys
from . import models as m
from .config import Settings


class Op(NamedTuple):
    method: str
    path: str
    id: str
    summary: str
    answer: Any  # a models type, None for a non-JSON answer
    errors: tuple[int, ...] = ()
    query: type[msgspec.Struct] | None = None
    body: Any = None
    admin: bool = False


_BODY = (400, 413, 415)
OPS = (
    Op("get", "/api/comments", "pollComments", "Global poll: messages after a position, oldest first", m.PollPage,
       (400,), m.PollParams),
    Op("post", "/api/comments", "postComment", "Store a message (idempotent by id)", m.Posted, _BODY,
       body=m.Comment),
    Op("patch", "/api/comments/{id}", "scoreComment", "Set a message's eqScore", m.Scored, (*_BODY, 404, 409),
       body=m.ScoreBody),
    Op("get", "/api/conversation", "getConversation", "One pair's messages (GodMode pairs include every session), "
       "a bare array oldest first", list[m.StoredRaw], (400,), m.ConversationParams),
    Op("get", "/api/godmode-conversation", "getGodmodeConversation", "One God Mode session with its messages",
       m.OneSession, (400, 404), m.OneSessionParams),
    Op("get", "/api/godmode-session/{session_id}", "getGodmodeSession", "One God Mode session with its messages",
       m.OneSession, (400, 404), m.SessionParams),
    Op("get", "/api/godmode-sessions", "listGodmodeSessions", "A human's God Mode sessions, newest first",
       m.SessionList, (400,), m.SessionListParams),
    Op("post", "/api/godmode-session", "postGodmodeSession", "Store a session's metadata", m.SessionSaved, _BODY,
       body=m.SessionMetaBody),
    Op("post", "/api/queue/claim-next", "claimNext", "Claim the head of the queue (priority high first, then "
       "oldest)", m.ClaimNextAnswer, (*_BODY, 409), body=m.ClaimNextBody),
    Op("post", "/api/queue/claim", "claim", "Claim one pending message by id", m.Claimed, (*_BODY, 404, 409),
       body=m.ClaimBody),
    Op("post", "/api/queue/complete", "complete", "Mark a pending or processing message complete (409 for a "
       "claimToken that is no longer the current claim)", m.Done, (*_BODY, 404, 409), body=m.CompleteBody),
    Op("get", "/api/queue/pending", "pendingMessages", "The head of the queue (older bot builds); at most 1 MiB "
       "of messages and contexts", m.PendingAnswer, (400,), m.PendingParams),
    Op("get", "/api/admin/stats", "adminStats", "Counters", m.Stats),
    Op("post", "/api/admin/purge", "adminPurge", "Delete everything this service wrote", m.Purged, (401, 403),
       admin=True),
    Op("get", "/api/admin/list-keys", "adminListKeys", "One SCAN page of conv:/godmode: keys; follow `cursor` "
       "until null", m.KeyPage, (400, 401, 403), m.ListKeysParams, admin=True),
    Op("get", "/healthz", "healthz", "The process answers", m.Health),
    Op("get", "/readyz", "readyz", "Redis answers (503 otherwise)", m.Ready),
    Op("get", "/metrics", "metrics", "Prometheus text exposition", None),
    Op("get", "/openapi.json", "openapi", "This document", dict[str, Any]),
)
_NO_503 = ("/healthz", "/metrics", "/openapi.json")  # answer without Redis (/metrics reports it in-band)

_STATUS = {
    400: "Malformed input; `field` names the offending field",
    401: "Authorization header missing",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict with the message's current state",
    413: "Body or message larger than a limit",
    415: "Body is a form, not JSON",
    503: "Redis is unreachable or failed; retry later",
}
_REF = "#/components/schemas/{name}"


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def build_spec(settings: Settings) -> dict[str, Any]:
    types = [m.ErrorBody, m.Message, m.SessionData, *(t for op in OPS for t in (op.answer, op.query, op.body) if t)]
    refs, schemas = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(id, types), refs, strict=True))
    schemas["Comment"].update(m.AI_NAMES_HUMAN)
    schemas["Comment"]["description"] += (f" At most {settings.max_body_bytes} bytes of JSON; the stored message "
                                          f"at most {settings.max_key_bytes} bytes (413 past either).")
    schemas["SessionData"]["description"] += f" At most {settings.max_session_meta_bytes} bytes."
    error = {"$ref": _REF.format(name="ErrorBody")}
    path_id = {"type": "string", "pattern": m.anchored(keys.ID_RE.pattern)}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPS:
        params = [{"name": name, "in": "path", "required": True, "schema": path_id}
                  for name in (p.strip("{}") for p in op.path.split("/") if p.startswith("{"))]
        if op.query is not None:
            query = schemas[op.query.__name__]
            params += [{"name": name, "in": "query", "required": name in query.get("required", ()), "schema": schema}
                       for name, schema in query["properties"].items()]
        ok = _json(schema_of[id(op.answer)]) if op.answer is not None else {
            "content": {"text/plain": {"schema": {"type": "string"}}}}
        responses = {"200": {"description": "OK", **ok}}
        for code in (*op.errors, *(() if op.path in _NO_503 else (503,))):
            responses[str(code)] = {"description": _STATUS[code], **_json(error)}
        operation: dict[str, Any] = {"operationId": op.id, "summary": op.summary, "responses": responses}
        if params:
            operation["parameters"] = params
        if op.body is not None:
            operation["requestBody"] = {"required": True, **_json(schema_of[id(op.body)])}
        if op.admin:
            operation["security"] = [{"adminToken": []}]
        paths.setdefault(op.path, {})[op.method] = operation
    for op in OPS:  # inlined as parameters above
        if op.query is not None:
            schemas.pop(op.query.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "godmode-store", "version": "0.1.0",
                 "description": "Redis-backed message store for a multi-AI chat with God Mode sessions. "
                                "Every error is JSON with an `error` string."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}},
    }


_cached: tuple[Settings, bytes] | None = None


async def openapi_endpoint(request: Request) -> Response:
    global _cached
    settings: Settings = request.app.state.settings
    if _cached is None or _cached[0] is not settings:
        _cached = (settings, m.encode(build_spec(settings)))
    return Response(_cached[1], media_type="application/json")
