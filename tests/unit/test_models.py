"""Validation and key routing: pure functions, no Redis."""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

from app import feed, keys, models
from app.config import ConfigError, Settings, load_settings
from app.errors import BadRequest
from tests.helpers import (
    GODMODE,
    GODMODE_COLOR,
    HUMAN,
    HUMAN_COLOR,
    ai_reply,
    expected_member,
    godmode_question,
    human,
)

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


def test_stored_json_is_head_middle_state_tail() -> None:
    p = plan(ai_reply("q1", text='quote " and \\ and ünïcode', eqScore=7))
    assert p.status == "complete" and p.middle.endswith(b",") and not p.middle.startswith(b"{")
    stored = models.decode(expected_member(p, 1766300000123, "x.app"))
    assert stored["timestamp"] == 1766300000123 and stored["botParams"]["completedAt"] == 1766300000123
    assert stored["text"] == 'quote " and \\ and ünïcode' and stored["domain"] == "x.app" and stored["eqScore"] == 7
    assert list(stored)[:4] == ["id", "timestamp", "domain", "text"] and list(stored)[-1] == "eqScore"
    assert list(stored["botParams"])[-5:] == ["status", "claimedBy", "claimedAt", "attempts", "completedAt"]


def test_stored_json_of_a_queued_question_is_pending() -> None:
    p = plan(human())
    stored = models.decode(expected_member(p, 5, "saywhatwant.app"))
    assert p.status == "pending" and stored["botParams"]["status"] == "pending"
    assert stored["botParams"]["claimedBy"] is None and stored["botParams"]["attempts"] == 0
    assert "context" not in stored  # kept with the queue entry, not in the key's bytes


def test_stored_json_without_bot_params_has_no_state() -> None:
    p = plan(human(entity=None))
    stored = models.decode(expected_member(p, 5, "saywhatwant.app"))
    assert p.status == "" and "botParams" not in stored and stored["eqScore"] == 0


def test_plan_routes_a_human_to_its_partition() -> None:
    p = plan(ai_reply("q1"))
    assert p.partition == keys.partition_of(HUMAN, HUMAN_COLOR, S.partitions)
    assert (p.human_user, p.human_color) == (HUMAN, HUMAN_COLOR)
    assert plan(human()).partition == p.partition  # a question and its answer live together


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
        ({}, (0, 200, None)),
        ({"after": "1766300000123", "limit": "50", "type": "human"}, (1766300000123, 50, b'"message-type":"human"')),
        ({"since": "5"}, (5, 200, None)),
        ({"after": "", "since": "5"}, (5, 200, None)),
        ({"limit": "5000", "type": "AI"}, (0, 1000, b'"message-type":"AI"')),
        ({"limit": "0", "type": "ai"}, (0, 1, b'"message-type":"AI"')),
        ({"after": "-9"}, (-1, 200, None)),
        ({"after": str(2**60)}, (models.MAX_TS, 200, None)),
    ],
)
def test_poll_query(query: dict[str, str], expected: tuple[int, int, bytes | None]) -> None:
    q = models.poll_query(query, 12)
    assert (q.positions, q.limit, q.type_mark, q.reset) == ((expected[0],) * 12, expected[1], expected[2], False)


def test_poll_query_cursor_takes_precedence_over_after() -> None:
    positions = tuple(range(100, 112))
    q = models.poll_query({"cursor": feed.encode_cursor(positions), "after": "5", "limit": "3"}, 12)
    assert (q.positions, q.limit, q.reset) == (positions, 3, False)


def test_poll_query_cursor_of_another_partition_count_resets() -> None:
    q = models.poll_query({"cursor": feed.encode_cursor((30, 10, 20))}, 12)
    assert q.positions == (10,) * 12 and q.reset


@pytest.mark.parametrize(("query", "field"), [
    ({"after": "abc"}, "after"), ({"since": "1.5"}, "since"), ({"limit": "1e3"}, "limit"), ({"type": "bot"}, "type"),
    ({"cursor": "nope"}, "cursor"), ({"cursor": "c1.0"}, "cursor"),
    ({"cursor": feed.encode_cursor(tuple(range(12))), "after": "-5.9e-75"}, "after"),  # a cursor wins, still checked
])
def test_poll_query_rejects(query: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        models.poll_query(query, 12)
    assert err.value.extra["field"] == field


def test_partition_keys_share_one_hash_tag_per_partition() -> None:
    from redis.crc import key_slot

    parts = keys.partitions(12)
    assert len({p.tag for p in parts}) == 12
    for p in parts:
        own = p.own_keys()
        assert len(set(own)) == 10 and {key_slot(k.encode()) for k in (*own, p.sessions("a", "b"), p.pair_sessions("a", "b", "c", "d"))} == {
            key_slot(p.feed.encode())}
        # Partition i's tag falls in the i-th of 12 equal slices of the slot space (even over masters).
        assert p.index * 16384 // 12 <= key_slot(p.feed.encode()) < (p.index + 1) * 16384 // 12
    assert keys.partition_of(HUMAN, HUMAN_COLOR, 12) is parts[keys.partition_index(HUMAN, HUMAN_COLOR, 12)]
    assert keys.partitions(1)[0].feed.startswith("feed:{p0.")


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


@pytest.mark.parametrize("domain", ['a"b', "a\\b", "a b", "ü.app", "x" * 254])
def test_default_domain_is_checked_like_a_posted_domain(domain: str) -> None:
    # It is written into stored messages: a quote in it made every poll answer invalid JSON.
    with pytest.raises(ConfigError, match="DEFAULT_DOMAIN"):
        load_settings({"DEFAULT_DOMAIN": domain, "CONV_WINDOW": "0"})
    assert load_settings({"DEFAULT_DOMAIN": "shittosay.app"}).default_domain == "shittosay.app"


def test_load_settings_partitions_and_feed_window() -> None:
    s = load_settings({"PARTITIONS": "5", "FEED_WINDOW": "100"})
    assert (s.partitions, s.feed_window) == (5, 100)
    assert (Settings().partitions, Settings().feed_window) == (12, 4000)
    for env in ({"PARTITIONS": "0"}, {"PARTITIONS": str(keys.MAX_PARTITIONS + 1)}, {"FEED_WINDOW": "0"}):
        with pytest.raises(ConfigError) as err:
            load_settings(env)
        assert next(iter(env)) in str(err.value)


def test_load_settings_redis_mode_and_replica_acknowledgement() -> None:
    s = load_settings({"REDIS_MODE": "cluster", "REDIS_URL": "rediss://user:pw@node-1:6380", "REDIS_WAIT_REPLICAS": "1"})
    assert (s.cluster, s.redis_wait_replicas) == (True, 1)
    assert (Settings().cluster, Settings().redis_wait_replicas) == (False, 0)
    for env, named in [
        ({"REDIS_MODE": "sentinel"}, "REDIS_MODE"),
        ({"REDIS_MODE": "cluster", "REDIS_URL": "redis://node-1:6379/2"}, "REDIS_URL"),  # a cluster has database 0 only
        ({"REDIS_MODE": "cluster", "REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL"),
        ({"REDIS_WAIT_REPLICAS": "-1"}, "REDIS_WAIT_REPLICAS"),
    ]:
        with pytest.raises(ConfigError, match=named):
            load_settings(env)


def test_message_keys_get_their_partitions_tag_only_on_a_cluster() -> None:
    alone, spread = keys.partition_of("Ann", "231080164", 12), keys.partition_of("Ann", "231080164", 12, cluster=True)
    assert alone.key_suffix == "" and spread.key_suffix == spread.tag == alone.tag
    conv = keys.conv_key("Ann", "231080164", "TheEternal", "080175220", spread.key_suffix)
    assert conv == "conv:Ann:231080164:TheEternal:080175220" + spread.tag
    assert keys.message_key_human(conv) == ("Ann", "231080164")
    assert keys.untagged(conv) == "conv:Ann:231080164:TheEternal:080175220"
    assert key_slot(conv.encode()) == key_slot(spread.feed.encode())


def test_documented_edge_cases_of_input() -> None:
    # README "Input rules": an integral float is an integer; '' and null are absent; unknown fields ignored.
    p = plan(human(eqScore=72.0, priority=9.0, botParams={"entity": "e", "priority": None}))
    assert p.eq_score == 72 and p.queue_rank_base == keys.queue_rank_base(9)
    assert b'"priority":9,' in models.stored_member(p, 5, "x.app")
    p = plan(human(id="", domain="", replyTo=None, botParams={"entity": "e", "ais": "", "sessionId": ""}, anything=[1]))
    assert len(p.id) == 11 and p.domain == "" and p.reply_to == "" and p.key.endswith(":e:default")
    for change, field in [({"username": ""}, "username"), ({"text": None}, "text"), ({"username": "Human\n"}, "username"),
                          ({"messageType": "robot", "message-type": "human"}, "messageType"), ({"priority": 7.5}, "priority"),
                          ({"eqScore": "5"}, "eqScore")]:
        assert bad_field({**human(), **change}) == field


def test_bad_field_messages_say_what_is_expected() -> None:
    with pytest.raises(BadRequest) as err:
        plan({**human(), "username": "a:b"})
    assert err.value.message == "username: must be 1-64 characters without ':', '*', '?', '[', ']', '\\', '{', '}' " \
                                "or control characters"
    with pytest.raises(BadRequest) as err:
        plan({"username": "Human", "color": "080150227"})
    assert (err.value.message, err.value.extra["field"]) == ("text: is required", "text")
    with pytest.raises(BadRequest) as err:
        plan({**human(), "botParams": {"entity": "e", "priority": 100}})
    assert err.value.extra["field"] == "botParams.priority" and "<= 99" in err.value.message
