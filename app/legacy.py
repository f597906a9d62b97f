"""`import-legacy`: load a JSON export of the original Durable Object store (storage key -> message
array) and split each legacy `conv:{hU}:{hC}:GodMode:{gC}` key into per-session `godmode:` keys (the
seed's "Option B"):

- a God Mode answer with `botParams.sessionId` goes to that session's key;
- one without goes to the session of the human question before it (`legacy-<question id>`; the
  answer's stored `botParams.sessionId` names it, and `replyTo` names the question when it was empty);
- human questions stay in the pair's `conv:` key, as a new question does; answers before any
  question stay there too.
Other `conv:`/`godmode:` keys are imported as they are (a `conv:` key keeps its newest CONV_WINDOW
messages within MAX_KEY_BYTES); `godmode-session:` metadata is set when absent; other keys are skipped.

Messages keep their own timestamps. Each is stored in the exact member format of the append path
(`{"id","timestamp","domain",` + the fixed fields + the state tail lua/_lib.lua owns), written to
its key, and the key is then indexed by lua/index_key.lua, as rebuild-indexes does, so the ids,
feed, size, session and queue indexes and the counters stay consistent. Idempotent: a message whose
id its partition already knows is not written again. Run it with the service stopped: old
timestamps land behind live pollers' positions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import keys, models
from .errors import BadRequest
from .models import AppendPlan
from .store import Store

GODMODE_AI = "godmode"  # the legacy pair key of God Mode: its AI username, any case
_STATUSES = {"pending": "pending", "processing": "pending", "complete": "complete"}  # claims do not survive


@dataclass
class Report:
    dry_run: bool
    keys_read: int = 0
    messages_read: int = 0
    imported: int = 0
    already_present: int = 0
    keys_written: dict[str, int] = field(default_factory=lambda: {keys.CONV: 0, keys.GODMODE: 0})
    sessions_split: int = 0
    trimmed: int = 0
    oversize_sessions: list[str] = field(default_factory=list)
    session_meta: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    moves: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def body(self) -> dict[str, Any]:
        return {"dryRun": self.dry_run, "keysRead": self.keys_read, "messagesRead": self.messages_read,
                "imported": self.imported, "alreadyPresent": self.already_present, "keysWritten": self.keys_written,
                "sessionsSplit": self.sessions_split, "trimmed": self.trimmed,
                "oversizeSessions": self.oversize_sessions, "sessionMeta": self.session_meta,
                "skipped": self.skipped, "conflicts": self.conflicts, "moves": self.moves}


@dataclass
class _Row:
    """One legacy message, validated, on its way to `key`."""

    plan: AppendPlan
    ts: int
    domain: str
    attempts: int


@dataclass
class _Target:
    key: str
    kind: str
    human_user: str
    human_color: str
    session_member: str
    rows: list[_Row] = field(default_factory=list)


def _parse_key(key: str) -> tuple[str, list[str]] | None:
    parts = key.split(":")
    if parts[0] == keys.CONV and len(parts) == 5:
        kind = keys.CONV
    elif parts[0] == keys.GODMODE and len(parts) == 6:
        kind = keys.GODMODE
    else:
        return None
    try:
        models.key_part(parts[1], "humanUsername")
        models.color(parts[2], "humanColor")
        models.key_part(parts[3], "aiUsername")
        models.key_part(parts[4], "aiColor")
        if kind == keys.GODMODE:
            models.ident(parts[5], "sessionId")
    except BadRequest:
        return None
    return kind, parts[1:]


def _int(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _row(raw: Any, human_user: str, human_color: str, session_id: str | None, reply_to: str | None,
         settings: Any) -> _Row:
    """A legacy message as the append path would have stored it (its fields, its own timestamp)."""
    if not isinstance(raw, dict):
        raise BadRequest("message", "is not an object")
    ts = _int(raw.get("timestamp"), 0, models.MAX_TS)
    if ts is None:
        raise BadRequest("timestamp", "is missing or not a millisecond timestamp")
    body = dict(raw)
    if _int(body.get("eqScore"), 0, 100) is None:
        body.pop("eqScore", None)
    params = dict(body["botParams"]) if isinstance(body.get("botParams"), dict) else None
    if params is None and not _is_human(raw):
        params = {}  # an AI message names its human in botParams; the legacy key says who it is
    legacy_status = ""
    attempts = 0
    if params is not None:
        legacy_status = str(params.get("status") or "")
        attempts = _int(params.get("attempts"), 0, 10**6) or 0
        params.setdefault("humanUsername", human_user)
        params.setdefault("humanColor", human_color)
        if _int(params.get("priority"), 0, 99) is None:
            params.pop("priority", None)
        if session_id is not None:
            params["sessionId"] = session_id
        body["botParams"] = params
    if reply_to and not body.get("replyTo"):
        body["replyTo"] = reply_to
    plan = models.plan_append(body, settings)
    status = plan.status
    if status == "pending":  # a human message for a bot: keep the legacy queue state
        status = _STATUSES.get(legacy_status, "complete")
    domain = plan.domain or settings.default_domain
    return _Row(msgspec.structs.replace(plan, status=status), ts, domain, attempts)


def member(row: _Row) -> str:
    return models.stored_member(row.plan, row.ts, row.domain, row.attempts).decode()


def _legacy_session_id(question_id: str) -> str:
    session_id = f"legacy-{question_id}"
    if len(session_id) > keys.KEY_PART_MAX:
        session_id = "legacy-" + hashlib.sha1(question_id.encode()).hexdigest()[:20]
    return session_id


def _is_human(raw: Any) -> bool:
    kind = raw.get("message-type", raw.get("messageType", "human")) if isinstance(raw, dict) else ""
    return isinstance(kind, str) and kind.lower() == "human"


def _timestamp_order(messages: list[Any]) -> list[Any]:
    def ts(raw: Any) -> int:
        value = raw.get("timestamp") if isinstance(raw, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return sorted(messages, key=ts)  # stable: equal timestamps keep the export's order


def plan_import(export: Mapping[str, Any], store: Store, report: Report) -> tuple[list[_Target], dict[str, bytes]]:
    """Every target key with its messages, and the session metadata to set. Pure: no Redis."""
    settings = store.settings
    targets: dict[str, _Target] = {}
    metas: dict[str, bytes] = {}
    seen: set[str] = set()

    def add(key: str, kind: str, parts: list[str], session_id: str | None, raw: Any, reply_to: str | None) -> None:
        human_user, human_color, ai_user, ai_color = parts[:4]
        try:
            row = _row(raw, human_user, human_color, session_id, reply_to, settings)
        except BadRequest as exc:
            report.skip(f"invalid message ({exc.extra.get('field', 'message')})")
            return
        if row.plan.id in seen:
            report.skip("id already in this export")
            return
        seen.add(row.plan.id)
        partition = keys.partition_of(human_user, human_color, settings.partitions, settings.cluster)
        target = targets.get(key)
        if target is None:
            member_name = keys.session_member(ai_user, ai_color, key.rsplit(":", 1)[1]) if kind == keys.GODMODE else ""
            target = targets[key] = _Target(key + partition.key_suffix, kind, human_user, human_color, member_name)
        target.rows.append(_Row(msgspec.structs.replace(
            row.plan, key=target.key, kind=kind, partition=partition, human_user=human_user, human_color=human_color,
            session_member=target.session_member), row.ts, row.domain, row.attempts))

    for key, value in export.items():
        report.keys_read += 1
        if key.startswith(keys.SESSION_META_PREFIX) and isinstance(value, dict):
            session_id = key[len(keys.SESSION_META_PREFIX):]
            if keys.ID_RE.fullmatch(session_id):
                metas[key] = models.encode(value)
            else:
                report.skip("bad session metadata key")
            continue
        parsed = _parse_key(key)
        if parsed is None or not isinstance(value, list):
            report.skip("not a conv:/godmode: message key")
            continue
        kind, parts = parsed
        report.messages_read += len(value)
        if kind == keys.CONV and parts[2].lower() == GODMODE_AI:
            moved: dict[str, int] = {}
            question: str | None = None
            for raw in _timestamp_order(value):
                params = raw.get("botParams") if isinstance(raw, dict) else None
                given = params.get("sessionId") if isinstance(params, dict) else None
                if _is_human(raw) or not (given or question):
                    add(key, keys.CONV, parts, None, raw, None)
                    if _is_human(raw) and isinstance(raw.get("id"), str):
                        question = str(raw["id"])
                    continue
                sid = given if isinstance(given, str) and given else _legacy_session_id(str(question))
                human_user, human_color, ai_user, ai_color = parts[:4]
                target_key = key
                if keys.ID_RE.fullmatch(sid):
                    target_key = keys.godmode_key(human_user, human_color, ai_user, ai_color, sid)
                before = len(targets[target_key].rows) if target_key in targets else 0
                add(target_key, keys.GODMODE, parts, sid, raw, None if given else question)
                if target_key in targets and len(targets[target_key].rows) > before:
                    moved[target_key] = moved.get(target_key, 0) + 1
            if moved:
                report.sessions_split += len(moved)
                report.moves.append({"from": key, "to": [{"key": k, "messages": n} for k, n in moved.items()]})
        else:
            for raw in _timestamp_order(value):
                add(key, kind, parts, parts[4] if kind == keys.GODMODE else None, raw, None)

    out = list(targets.values())
    for target in out:
        target.rows.sort(key=lambda r: r.ts)
        if target.kind == keys.CONV:
            _trim(target, settings.conv_window, settings.max_key_bytes, report)
        elif sum(len(member(r).encode()) for r in target.rows) > settings.max_key_bytes:
            report.oversize_sessions.append(target.key)
    return out, metas


def _trim(target: _Target, window: int, max_bytes: int, report: Report) -> None:
    """A conv: key as the append path keeps it: the newest `window` messages within `max_bytes`,
    never dropping a pending one."""
    rows = target.rows
    total = sum(len(member(r).encode()) for r in rows)
    keep: list[_Row] = []
    for i, row in enumerate(rows):
        remaining = len(rows) - i
        if row.plan.status != "pending" and (remaining > window or total > max_bytes):
            total -= len(member(row).encode())
            report.trimmed += 1
            continue
        keep.append(row)
    target.rows = keep


def _scores(rows: list[_Row]) -> list[str]:
    """ts + seq/1024 within a key, seq counting equal timestamps: the key reads in import order."""
    out, last, seq = [], -1, 0
    for row in rows:
        seq = seq + 1 if row.ts == last else 0
        last = row.ts
        out.append(str(row.ts) if seq == 0 else f"{row.ts + seq / 1024:.10f}")
    return out


async def import_legacy(store: Store, export: Mapping[str, Any], *, dry_run: bool) -> Report:
    report = Report(dry_run)
    targets, metas = plan_import(export, store, report)
    for target in targets:
        p = target.rows[0].plan.partition if target.rows else None
        if p is None:
            continue
        known = await store.known_ids(p, [row.plan.id for row in target.rows])
        indexed = await store.is_indexed(p, target.key)
        fresh = [row for row, present in zip(target.rows, known, strict=True) if not present]
        report.already_present += len(target.rows) - len(fresh)
        if not fresh:
            continue
        if indexed:  # the live service already wrote to this key: index_key would skip it
            report.conflicts.append(target.key)
            continue
        report.imported += len(fresh)
        report.keys_written[target.kind] += 1
        if dry_run:
            continue
        # Scores over all rows, so a re-run after an interruption writes the same members.
        scored = [(score, member(row))
                  for row, score, present in zip(target.rows, _scores(target.rows), known, strict=True) if not present]
        await store.import_messages(p, target.key, scored, target.kind, target.human_user, target.human_color,
                                    target.session_member)
    for key, data in metas.items():
        if dry_run:
            report.session_meta += 0 if await store.exists(key) else 1
        else:
            report.session_meta += 1 if await store.save_session_meta(key, data, only_new=True) else 0
    return report
