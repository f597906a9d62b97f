"""Message bodies shaped like the real clients' (tests/helpers.py), with realistic sizes."""

from __future__ import annotations

import random
from typing import Any

from tests.helpers import GODMODE, GODMODE_COLOR, HUMAN_COLOR, ai_reply, godmode_question, godmode_session_posts, human

__all__ = ["GODMODE", "GODMODE_COLOR", "HUMAN_COLOR", "godmode_question", "godmode_session_posts", "human",
           "keyspace_message", "post_mix", "text"]

_WORDS = ("the", "meaning", "of", "life", "is", "a", "question", "that", "every", "entity", "answers",
          "in", "its", "own", "way", "and", "God", "Mode", "asks", "them", "all", "at", "once")
_CORPUS_RNG = random.Random(0)
_CORPUS = " ".join(_CORPUS_RNG.choice(_WORDS) for _ in range(8000))  # ~32 KB to cut texts from


def text(rng: random.Random, size: int) -> str:
    """`size` characters of words, cut from a fixed corpus (building them word by word is slow)."""
    start = rng.randrange(len(_CORPUS) - size)
    return _CORPUS[start:start + size]


def post_mix(rng: random.Random, i: int, users: int) -> dict[str, Any]:
    """What bench/wrk/post_comment.lua sends: room messages and AI replies, spread over `users` humans."""
    user = f"u{i % users}"
    if i % 2:
        return ai_reply("", text(rng, 820), human_user=user, human_color=HUMAN_COLOR)
    return human(text(rng, 230), entity=None, ais=None, user=user)


def keyspace_message(rng: random.Random, key_index: int, message_index: int, per_key: int) -> dict[str, Any]:
    """Message `message_index` of key `key_index`: even keys are conv: keys of human c<i> with
    TheEternal, odd keys God Mode sessions, five per human g<i // 10> (status, answers, synthesis).
    Sizes stay near the low end of the real ones (2-8 KB syntheses) so 100k keys preload fast."""
    if key_index % 2 == 0:
        return ai_reply("", text(rng, rng.randint(300, 1500)), human_user=f"c{key_index}", human_color=HUMAN_COLOR)
    if message_index == 0:
        body = f"🔮 I will now begin the inquiry with {per_key} entities..."
    elif message_index == per_key - 1:
        body = "⚡ " + text(rng, rng.randint(2000, 4000))
    else:
        body = f"(Entity{message_index}) " + text(rng, rng.randint(500, 2000))
    return ai_reply("", body, user=GODMODE, color=GODMODE_COLOR, entity="god-mode",
                    human_user=godmode_human(key_index), human_color=HUMAN_COLOR, session_id=f"s{key_index}")


def godmode_human(key_index: int) -> str:
    return f"g{key_index // 10}"
