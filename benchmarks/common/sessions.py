"""Write small Claude Code transcripts (the real `~/.claude/projects` line format) for tests and benchmarks."""

from __future__ import annotations

import json
import uuid
from pathlib import Path


def write_session(folder: Path, text: str, *, start: str, cwd: str = "/home/dev/proj", prompt: str = "Look at this",
                  sid: str | None = None) -> Path:
    """One session: a user prompt, a Read tool call whose result is `text`, and a short reply."""
    sid = sid or str(uuid.uuid4())
    folder.mkdir(parents=True, exist_ok=True)
    u1, a1, u2, a2 = (str(uuid.uuid4()) for _ in range(4))
    tool = "toolu_" + uuid.uuid4().hex[:24]
    base = {"isSidechain": False, "userType": "external", "cwd": cwd, "sessionId": sid, "version": "2.0.76",
            "gitBranch": "main"}
    lines = [
        {**base, "parentUuid": None, "type": "user", "uuid": u1, "timestamp": start,
         "message": {"role": "user", "content": prompt}},
        {**base, "parentUuid": u1, "type": "assistant", "uuid": a1, "timestamp": start,
         "message": {"id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
                     "model": "claude-sonnet-4-5", "stop_reason": "tool_use",
                     "content": [{"type": "tool_use", "id": tool, "name": "Read", "input": {"file_path": "/tmp/f"}}]}},
        {**base, "parentUuid": a1, "type": "user", "uuid": u2, "timestamp": start,
         "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool, "content": text}]}},
        {**base, "parentUuid": u2, "type": "assistant", "uuid": a2, "timestamp": start,
         "message": {"id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
                     "model": "claude-sonnet-4-5", "stop_reason": "end_turn",
                     "content": [{"type": "text", "text": "Done."}]}},
    ]
    path = folder / f"{sid}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path
