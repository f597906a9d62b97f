"""Validation and key routing: pure functions, no Redis."""

from __future__ import annotations

from typing import Any

import pytest

from app import keys, models
from app.config import ConfigError, Settings, load_settings
from app.errors import BadRequest
from tests.helpers import GODMODE, GODMODE_COLOR, HUMAN, HUMAN_COLOR, ai_reply, godmode_question, human

S = Settings()


def plan(body: dict[str, Any]) -> models.AppendPlan:
    return models.plan_append(body, S)


def bad_field(body: dict[str, Any]) -> str:
    with pytest.raises(BadRequest) as err:
        plan(body)
    return str(err.value.extra["field"])


def test_key_formats_match_the_seed() -> None:
    assert keys.conv_key("Human", "231080164", "TheEternal", "080175220") == "conv:Human:231080164:TheEternal:080175220"
    assert (
        keys.godmode_key("Human", "231080164", "GodMode", "171181104", "1762985133459-fswhr02")
        == "godmode:Human:231080164:GodMode:171181104:1762985133459-fswhr02"
    )


def test_human_message_routes_to_its_ais_conversation_and_is_queued() -> None:
    p = plan(human())
    assert p.key == "conv:Human:080150227:TheEternal:080175220"
    assert p.queue_rank_base == keys.queue_rank_base(5) and p.context
    assert p.kind == keys.CONV and not p.is_ai


def test_human_without_ais_uses_entity_with_default_color() -> None:
    assert plan(human(ais=None)).key == "conv:Human:080150227:the-eternal:default"


def test_ais_without_color_gets_default() -> None:
    assert plan(human(ais="TheEternal")).key == "conv:Human:080150227:TheEternal:default"


def test_room_message_without_entity_goes_to_platform_and_is_not_queued() -> None:
    p = plan(human(entity=None))
    assert p.key == "conv:Human:080150227:platform:platform"
    assert p.queue_rank_base is None and p.context == b""


def test_ai_reply_routes_to_the_humans_conversation() -> None:
    p = plan(ai_reply("q1"))
    assert p.key == "conv:Human:080150227:TheEternal:080175220" and p.is_ai and p.queue_rank_base is None


def test_godmode_question_lands_in_pair_conv_key() -> None:
    assert plan(godmode_question()).key == f"conv:{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}"


def test_godmode_answer_with_session_routes_to_session_key() -> None:
    body = ai_reply("q1", user=GODMODE, color=GODMODE_COLOR, entity="god-mode", session_id="1763027011418-1mmzaea")
    p = plan(body)
    assert p.key == f"godmode:{HUMAN}:{HUMAN_COLOR}:{GODMODE}:{GODMODE_COLOR}:1763027011418-1mmzaea"
    assert p.kind == keys.GODMODE and p.session_member == f"{GODMODE}:{GODMODE_COLOR}:1763027011418-1mmzaea"


def test_session_id_on_another_entity_does_not_route_to_godmode() -> None:
    assert plan(ai_reply("q1", session_id="abc")).key.startswith("conv:")


def test_stored_json_is_head_timestamp_domain_tail() -> None:
    p = plan(ai_reply("q1", text='quote " and \\ and ünïcode'))
    member = p.head + b"1766300000123" + b',"domain":"x.app"' + p.tail + b"1766300000123" + p.tail_after_completed
    stored = models.decode(member)
    assert stored["timestamp"] == 1766300000123 and stored["botParams"]["completedAt"] == 1766300000123
    assert stored["text"] == 'quote " and \\ and ünïcode' and stored["domain"] == "x.app"
    assert list(stored)[:4] == ["id", "timestamp", "domain", "text"]


def test_message_type_alias_and_case() -> None:
    body = ai_reply("q1")
    del body["message-type"]
    body["messageType"] = "ai"
    assert plan(body).is_ai


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": 5}, "text"),
        ({"username": None}, "username"),
        ({"username": "*"}, "username"),
        ({"username": "a:b"}, "username"),
        ({"username": "a[b]"}, "username"),
        ({"username": "new\nline"}, "username"),
        ({"username": "x" * 65}, "username"),
        ({"color": "12345678"}, "color"),
        ({"color": "080224199-short"}, "color"),
        ({"id": "has space"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"domain": 'evil","x":"'}, "domain"),
        ({"eqScore": 101}, "eqScore"),
        ({"eqScore": 1.5}, "eqScore"),
        ({"eqScore": True}, "eqScore"),
        ({"context": "not a list"}, "context"),
        ({"context": ["x"] * 201}, "context"),
        ({"message-type": "robot"}, "message-type"),
        ({"botParams": "nope"}, "botParams"),
        ({"botParams": {"entity": "e", "priority": 100}}, "botParams.priority"),
        ({"botParams": {"entity": "e", "sessionId": "a/b"}}, "botParams.sessionId"),
        ({"botParams": {"entity": "e", "ais": "Bad*:080175220"}}, "botParams.ais"),
        ({"replyTo": "x y"}, "replyTo"),
    ],
)
def test_bad_input_names_the_field(change: dict[str, Any], field: str) -> None:
    assert bad_field({**human(), **change}) == field


def test_ai_reply_without_human_identity_names_it() -> None:
    body = ai_reply("q1")
    del body["botParams"]["humanUsername"]
    assert bad_field(body) == "botParams.humanUsername"
    body = ai_reply("q1", human_color="red")
    assert bad_field(body) == "botParams.humanColor"


def test_color_with_suffix_and_generated_id() -> None:
    body = human(color="080224199-HCb3TMu5jR")
    del body["id"]
    p = plan(body)
    assert p.key.startswith("conv:Human:080224199-HCb3TMu5jR:") and len(p.id) == 11


def test_top_level_priority_is_fallback() -> None:
    body = human(priority=9)
    del body["botParams"]["priority"]
    assert plan(body).queue_rank_base == keys.queue_rank_base(9)


def test_queue_rank_orders_priority_then_age() -> None:
    assert keys.queue_rank_base(9) + 2_000_000_000_000 < keys.queue_rank_base(5) + 1
    assert keys.queue_rank_base(0) + 2**42 < 2**53  # exact as a Redis double score


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (0, 200, "")),
        ({"after": "1766300000123", "limit": "50", "type": "human"}, (1766300000123, 50, "h")),
        ({"since": "5"}, (5, 200, "")),
        ({"limit": "5000", "type": "AI"}, (0, 1000, "a")),
        ({"after": "-9"}, (-1, 200, "")),
    ],
)
def test_poll_query(query: dict[str, str], expected: tuple[int, int, str]) -> None:
    q = models.poll_query(query)
    assert (q.after, q.limit, q.type_flag) == expected


@pytest.mark.parametrize(("query", "field"), [({"after": "abc"}, "after"), ({"limit": "1e3"}, "limit"), ({"type": "bot"}, "type")])
def test_poll_query_rejects(query: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        models.poll_query(query)
    assert err.value.extra["field"] == field


def test_session_meta_validation() -> None:
    ok = models.session_meta({"sessionKey": "godmode-session:1763-abc", "sessionData": {"messageIds": ["a", "b"]}}, S)
    assert ok.key == "godmode-session:1763-abc" and ok.message_count == 2
    for body, field in [
        ({"sessionKey": "conv:x", "sessionData": {}}, "sessionKey"),
        ({"sessionKey": "godmode-session:*", "sessionData": {}}, "sessionKey"),
        ({"sessionKey": "godmode-session:a", "sessionData": []}, "sessionData"),
        ({"sessionKey": "godmode-session:a", "sessionData": {"sessionId": "b"}}, "sessionData.sessionId"),
    ]:
        with pytest.raises(BadRequest) as err:
            models.session_meta(body, S)
        assert err.value.extra["field"] == field


def test_load_settings_reports_every_bad_variable_and_hides_secrets() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"MAX_KEY_BYTES": "big", "CONV_WINDOW": "0", "REDIS_URL": "http://x"})
    message = str(err.value)
    assert "MAX_KEY_BYTES" in message and "CONV_WINDOW" in message and "REDIS_URL" in message
    s = load_settings({"REDIS_URL": "redis://:hunter2@db:6379/1", "ADMIN_TOKEN": "sekrit", "CONV_WINDOW": "50"})
    assert s.conv_window == 50 and "hunter2" not in repr(s) and "sekrit" not in repr(s)
