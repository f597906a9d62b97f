"""The OpenAPI document: a valid 3.1 document, the routes the app serves and the README lists, and
schemas that accept exactly what the validation in models.py accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app import models
from app.api import routes
from app.config import Settings
from app.errors import BadRequest
from app.openapi import build_spec
from tests.helpers import ai_reply, human

SPEC = build_spec(Settings())
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_spec_is_a_valid_openapi_3_1_document() -> None:
    validate(SPEC)


def test_spec_readme_and_app_name_the_same_routes() -> None:
    documented = {(op.upper(), path) for path, ops in SPEC["paths"].items() for op in ops}
    served = {(method, route.path) for route in routes() for method in route.methods or () if method != "HEAD"}
    api_section = README.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (GET|POST|PATCH|PUT|DELETE) \| `([^`]+)` \|", api_section, re.MULTILINE))
    assert documented == served == listed


def _schema_accepts(body: dict[str, Any]) -> bool:
    schema = SPEC["paths"]["/api/comments"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    registry: Registry[Any] = Registry().with_resource("urn:spec", Resource.from_contents(
        SPEC, default_specification=DRAFT202012))
    return bool(OAS31Validator({"$ref": "urn:spec" + schema["$ref"]}, registry=registry).is_valid(body))


def _code_accepts(body: dict[str, Any]) -> bool:
    try:
        models.plan_append(body, Settings())
    except BadRequest:
        return False
    return True


def _no_human(body: dict[str, Any]) -> dict[str, Any]:
    del body["botParams"]["humanUsername"]
    return body


@pytest.mark.parametrize("body", [
    human(), human(entity=None), human(ais="TheEternal"), human(id="", domain="", replyTo=""), ai_reply("q1"),
    _no_human(ai_reply("q1")),
    {**ai_reply("q1"), "botParams": None},
    {**_no_human(ai_reply("q1")), "message-type": None, "messageType": "ai"},
    {**_no_human(ai_reply("q1")), "message-type": "", "messageType": "AI"},  # '' is human: messageType unread
    {**ai_reply("q1"), "message-type": None, "messageType": None},
    human(eqScore=5.0), human(eqScore=5.5), human(eqScore=True), human(eqScore="5"), human(priority=7.0), human(priority=99), human(priority=100), human(username="Human\n"),
    human(color="080224199-HCb3TMu5jR"), human(color="080224199\n"), human(context=["x"] * 201),
    human(ais="Bad*:080175220"), human(botParams={"entity": "", "ais": ""}), human(text=""),
])
def test_comment_schema_accepts_what_plan_append_accepts(body: dict[str, Any]) -> None:
    # The schema is models.Comment's plus AI_NAMES_HUMAN, the one rule between fields: both must agree.
    assert _schema_accepts(body) == _code_accepts(body)


def _pattern(schema: dict[str, Any]) -> str:
    found = [s["pattern"] for s in schema.get("anyOf", [schema]) if "pattern" in s]
    return str(found[0])


@pytest.mark.parametrize(("field", "good", "bad"), [
    ("username", "Ωμέγα 😀", "a:b"), ("username", "Human", "Human\n"), ("color", "080150227-HCb3TMu5jR", "٠٨٠١٥٠٢٢٧"),
    ("id", "k3j9x0a2mq1", "a:clock"), ("id", "k3j9x0a2mq1", "k3j9x0a2mq1\n"),
])
def test_spec_patterns_are_the_validators_patterns(field: str, good: str, bad: str) -> None:
    pattern = re.compile(_pattern(SPEC["components"]["schemas"]["Comment"]["properties"][field]))
    assert pattern.search(good) and not pattern.search(bad)
    assert _code_accepts(human(**{field: good})) and not _code_accepts(human(**{field: bad}))


def test_every_query_parameter_is_a_field_of_its_model() -> None:
    poll = {p["name"]: p for p in SPEC["paths"]["/api/comments"]["get"]["parameters"]}
    assert list(poll) == list(models.PollParams.__struct_fields__)
    pair = {p["name"]: p["required"] for p in SPEC["paths"]["/api/godmode-conversation"]["get"]["parameters"]}
    assert pair == {"humanUsername": True, "humanColor": True, "aiUsername": False, "aiColor": False,
                    "sessionId": True}
    assert "PollParams" not in SPEC["components"]["schemas"]  # inlined as parameters, not a body
