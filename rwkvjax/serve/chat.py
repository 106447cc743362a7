"""The chat template of the RWKV World models.

Template (BlinkDL's RWKV-7 World/G1 format): each message becomes `System: …`, `User: …` or `Assistant: …`,
messages are separated by a blank line, and the prompt ends with `Assistant:` for the model to continue.
Blank lines inside a message are collapsed to one newline, because a blank line ends a turn; the reply
stops at the next blank line (or at a requested stop string). Byte-level models get the same text.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
TURN_END = "\n\n"


@dataclasses.dataclass(frozen=True)
class Message:
    role: str     # a key of ROLES
    content: str  # the text (a list of text parts arrives joined)


def chat_prompt(messages: Sequence[Message]) -> str:
    parts = []
    for m in messages:
        content = re.sub(r"\n{2,}", "\n", m.content.replace("\r\n", "\n")).strip()
        parts.append(f"{ROLES[m.role]}: {content}")
    return TURN_END.join(parts) + TURN_END + "Assistant:"
