"""Each Lua script and its typed contract in app/scripts.py agree on KEYS and ARGV, by name and order.

The contract sends fields in the order of its KEYS/ARGV tuples; the script reads them with
`local a, b, ... = unpack(KEYS)` (or `local a = KEYS[1]`). A field added to one and not the other
would shift every later name silently, so this reads the script's own source.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, ClassVar

import pytest

from app import keys, scripts, store
from app.keys import Partition

LUA = resources.files("app").joinpath("lua")
CONTRACTS = {call.script: call for call in scripts.SCRIPTS}

_UNPACK = re.compile(r"^local\s+([\w\s,]+?)\s*=\s*unpack\((KEYS|ARGV)\)", re.MULTILINE)
_INDEXED = re.compile(r"^local\s+(\w+)\s*=\s*(KEYS|ARGV)\[(\d+)\]", re.MULTILINE)
_HEADER_KEY = re.compile(r"KEYS\[(\d+)\]\s+(?:must be\s+)?([a-z_]+)")


def source(script: str) -> str:
    return LUA.joinpath(f"{script}.lua").read_text("utf-8")


def header(script: str) -> str:
    """The leading comment block: what the script promises."""
    lines = []
    for line in source(script).splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines)


def unpacked(script: str) -> dict[str, dict[int, str]]:
    """{'KEYS': {1: name, ...}, 'ARGV': {...}} as the script's locals name them."""
    out: dict[str, dict[int, str]] = {"KEYS": {}, "ARGV": {}}
    text = source(script)
    for names, table in _UNPACK.findall(text):
        for i, name in enumerate(n.strip() for n in names.split(",")):
            out[table][i + 1] = name
    for name, table, index in _INDEXED.findall(text):
        out[table][int(index)] = name
    return out


def test_scripts_every_lua_file_has_one_contract() -> None:
    files = {f.name[:-4] for f in LUA.iterdir() if f.name.endswith(".lua") and not f.name.startswith("_")}
    assert files == set(CONTRACTS)
    assert len(CONTRACTS) == len(scripts.SCRIPTS)


@pytest.mark.parametrize("script", sorted(CONTRACTS))
def test_scripts_unpack_matches_contract(script: str) -> None:
    contract = CONTRACTS[script]
    names = unpacked(script)
    for table, declared in (("KEYS", contract.KEYS), ("ARGV", contract.ARGV)):
        read = names[table]
        assert read, f"{script}.lua reads no {table} by name"
        for index, name in read.items():
            assert index <= len(declared), f"{script}.lua reads {table}[{index}] {name}; the contract sends {declared}"
            assert declared[index - 1] == name, f"{script}.lua {table}[{index}] is {name}, contract says {declared}"
        if len(read) != len(declared):  # only scripts that take the tail as a list (purge: ipairs(KEYS))
            assert f"ipairs({table})" in source(script), f"{script}.lua ignores part of its {table}"


@pytest.mark.parametrize("script", sorted(CONTRACTS))
def test_scripts_header_names_keys_of_the_contract(script: str) -> None:
    declared = CONTRACTS[script].KEYS
    named = _HEADER_KEY.findall(header(script))
    assert named, f"{script}.lua's header documents no KEYS[n]"
    for index, name in named:
        assert declared[int(index) - 1] == name, f"{script}.lua header: KEYS[{index}] {name}, contract: {declared}"


@pytest.mark.parametrize("script", sorted(CONTRACTS))
def test_scripts_header_lists_argv_in_contract_order(script: str) -> None:
    text = header(script)
    assert "ARGV:" in text, f"{script}.lua's header documents no ARGV"
    argv_doc = text[text.index("ARGV:") :].split("Returns")[0]
    at = 0
    for name in CONTRACTS[script].ARGV:
        found = re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])").search(argv_doc, at)
        assert found, f"{script}.lua header's ARGV does not name {name!r} (in order): {argv_doc!r}"
        at = found.end()


def _example(call: type[scripts.Call[Any]], p: Partition) -> scripts.Call[Any]:
    """A call built from a partition the way Store builds it."""
    build = getattr(call, "build", None)
    if call is scripts.ClaimMessage:
        return scripts.ClaimMessage.build(p, "next", timeout_ms=1000)
    if call is scripts.CompleteMessage:
        return scripts.CompleteMessage.build(p, "m1", "")
    if call is scripts.ScoreMessage:
        return scripts.ScoreMessage.build(p, "m1", 5)
    assert build is not None
    return build(p)  # type: ignore[no-any-return]


@pytest.mark.parametrize("call", [scripts.ClaimMessage, scripts.CompleteMessage, scripts.ScoreMessage,
                                  scripts.PurgePartition])
def test_scripts_built_calls_send_one_partitions_keys(call: type[scripts.Call[Any]]) -> None:
    p = keys.partitions(12)[3]
    built = _example(call, p)
    sent = built.keys()
    assert len(sent) == len(call.KEYS) and all(k.endswith(p.tag) for k in sent)
    assert dict(zip(call.KEYS, sent, strict=True)) == {name: getattr(p, name) for name in call.KEYS}
    if call is scripts.PurgePartition:  # purge deletes every fixed key of the partition, sizes first
        assert set(sent) == set(p.own_keys()) and sent[0] == p.sizes
        assert built.args() == (p.sessions_prefix,)


@pytest.mark.parametrize("call", [scripts.ClaimMessage, scripts.CompleteMessage, scripts.ScoreMessage,
                                  scripts.PurgePartition])
def test_scripts_evalsha_gets_the_key_count_then_keys_then_args_by_name(call: type[scripts.Call[Any]]) -> None:
    built = _example(call, keys.partitions(12)[3])
    by_name = tuple(getattr(built, name) for name in (*call.KEYS, *call.ARGV))
    assert built.keys_and_args() == (len(call.KEYS), *by_name)


class _OneKey(scripts.Call[int], frozen=True):
    script: ClassVar[str] = "one_key"
    KEYS: ClassVar[tuple[str, ...]] = ("key",)
    ARGV: ClassVar[tuple[str, ...]] = ()
    key: str


class _OneKeyWithArg(_OneKey, frozen=True):
    ARGV: ClassVar[tuple[str, ...]] = ("arg",)
    arg: str = "a"


def test_scripts_a_contract_of_one_name_or_with_inherited_keys_sends_them_whole() -> None:
    assert _OneKey("conv:x").keys_and_args() == (1, "conv:x")  # not the key's characters
    assert _OneKeyWithArg("conv:x", "7").keys_and_args() == (1, "conv:x", "7")  # ARGV alone overridden


LIB = LUA.joinpath("_lib.lua").read_text("utf-8")


def defined_names(lua: str) -> set[str]:
    return {name for m in store._LUA_DEFINES.finditer(lua) for name in ([m[1]] if m[1] else m[2].split(", "))}


def test_scripts_lib_prune_sees_every_top_level_definition() -> None:
    """Store prepends only the _lib definitions a script uses: each top-level `local` is one it can
    see, and keeping them all gives _lib back unchanged."""
    tops = [line for line in LIB.splitlines() if line.startswith("local ")]
    assert len(tops) == len(list(store._LUA_DEFINES.finditer(LIB))), tops
    assert store._lib_for(LIB, LIB) == LIB


@pytest.mark.parametrize("script", sorted(CONTRACTS))
def test_scripts_lib_prune_keeps_what_the_script_uses(script: str) -> None:
    """Every _lib name the sent source mentions is defined in it (a helper left out would fail only
    when its path runs), and every definition sent is mentioned by the script or another one sent."""
    source = store._SCRIPTS[script].source.decode()
    body = LUA.joinpath(f"{script}.lua").read_text("utf-8")
    lib = source[: len(source) - len(body)]
    words = set(re.findall(r"[A-Za-z_]\w*", source))
    assert words & defined_names(LIB) <= defined_names(lib), sorted(words & defined_names(LIB) - defined_names(lib))
    for name in defined_names(lib):
        assert len(re.findall(rf"\b{name}\b", source)) > 1, name  # its definition and a use
