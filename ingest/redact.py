"""Secret redaction applied to every string before it leaves the parser (tokenizer, buffer, logs, disk).

Each rule replaces the secret part of a match with a typed marker `[REDACTED:<rule>]`. Rules are ordered:
specific key formats first, then structural ones (PEM blocks, connection-string passwords, `NAME=value`
assignments with secret-looking names), then high-entropy tokens that follow a secret-looking word.
Markers already present (exporters such as hive-mind write the same shape) are left as they are.
Lock-file integrity hashes, git SHAs, UUIDs and `data:` base64 payloads do not match any rule
(tests/ingest/test_ingest_redact.py measures the false-positive rate).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MARK = "[REDACTED:{}]"

# (rule name, pattern, group holding the secret or 0 for the whole match)
_KEY_FORMATS: list[tuple[str, str, int]] = [
    ("pem-private-key",
     r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", 0),
    ("anthropic-key", r"\bsk-ant-(?:api|admin|sid|oat)\d{2}-[A-Za-z0-9_\-]{32,}", 0),
    ("openai-key", r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{20,}", 0),
    ("openai-key", r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}", 0),
    ("openai-key", r"\bsk-[A-Za-z0-9]{48}\b", 0),
    ("aws-key", r"\b(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[0-9A-Z]{16}\b", 0),
    ("gcp-api-key", r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])", 0),
    ("gcp-oauth-token", r"\bya29\.[0-9A-Za-z_\-]{30,}", 0),
    ("gcp-client-secret", r"\bGOCSPX-[0-9A-Za-z_\-]{28}", 0),
    ("azure-storage-key", r"(?i)\bAccountKey=([A-Za-z0-9+/]{80,}={0,2})", 1),
    ("azure-sas", r"(?i)[?&]sig=([A-Za-z0-9%+/]{30,}={0,2})", 1),
    ("github-token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", 0),
    ("github-token", r"\bgithub_pat_[A-Za-z0-9_]{60,255}\b", 0),
    ("gitlab-token", r"\bgl(?:pat|dt|ptt|rt|cbt|oas)-[A-Za-z0-9_\-]{20,}", 0),
    ("huggingface-token", r"\bhf_[A-Za-z0-9]{34,}\b", 0),
    ("groq-key", r"\bgsk_[A-Za-z0-9]{48,}\b", 0),
    ("replicate-token", r"\br8_[A-Za-z0-9]{37}\b", 0),
    ("xai-key", r"\bxai-[A-Za-z0-9]{70,}\b", 0),
    ("perplexity-key", r"\bpplx-[A-Za-z0-9]{40,}\b", 0),
    ("openrouter-key", r"\bsk-or-v1-[a-f0-9]{64}\b", 0),
    ("slack-token", r"\bxox[abposr]-[0-9A-Za-z\-]{10,}", 0),
    ("slack-webhook", r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_\-]{20,}", 0),
    ("stripe-key", r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b", 0),
    ("stripe-webhook-secret", r"\bwhsec_[0-9A-Za-z]{24,}\b", 0),
    ("npm-token", r"\bnpm_[A-Za-z0-9]{36}\b", 0),
    ("pypi-token", r"\bpypi-AgE[A-Za-z0-9_\-]{50,}", 0),
    ("sendgrid-key", r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b", 0),
    ("twilio-key", r"\bSK[0-9a-f]{32}\b", 0),
    ("digitalocean-token", r"\bdo[opr]_v1_[a-f0-9]{64}\b", 0),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", 0),
    ("connection-password", r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s:/@'\"]+:([^\s@/'\"]{3,})@[^\s/'\"]", 1),
]

# Names that make the value next to them a secret (NAME=value, "name": "value", name: value).
_SECRET_NAME_BODY = (r"[A-Za-z0-9_.\-]*?(?:secret|passw(?:or)?d|passwd|pwd|token|api[_\-]?key|apikey|access[_\-]?key|"
                r"private[_\-]?key|client[_\-]?secret|auth[_\-]?key|credentials?|session[_\-]?key|signing[_\-]?key|"
                r"encryption[_\-]?key|master[_\-]?key|webhook[_\-]?secret|dsn)[A-Za-z0-9_.\-]*")
_SECRET_WORD = (r"(?:secret|passw(?:or)?d|passwd|pwd|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|"
                r"auth[_\-]?key|credentials?|session[_\-]?key|signing[_\-]?key|encryption[_\-]?key|master[_\-]?key|dsn)")
_ASSIGN_RULES: list[tuple[str, str, int]] = [
    # KEY=value / export KEY="value" / KEY: value (env files, shell, YAML)
    # (also inside JSON-escaped text, where lines are separated by a literal backslash-n)
    ("env-secret", r"(?im)(?:^|(?<=\\n))[ \t]*(?:-[ \t]+)?(?:export[ \t]+)?" + _SECRET_NAME_BODY
     + r"[ \t]*[=:][ \t]*(\\?[\"']?)([^\s\"'`#\\()\[\]{},;]{6,})\1[ \t]*(?:$|(?=\\[nr]))", 2),
    # "name": "value" / name = 'value' / name: "value" inside code and JSON
    # mysql -p'secret' / mysql -psecret, and --password=secret / --password secret on any command line
    ("cli-password", r"\b(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n]*?\s-p(['\"]?)([^\s'\"]{3,}[^\s'\",;.:!?])\1", 2),
    ("cli-password", r"(?<![\w-])--password(?:=|[ \t]+)(['\"]?)([^\s'\"-][^\s'\"]{2,}[^\s'\",;.:!?])\1", 2),
    # name=value inside a line (query strings, comments, one-line configs); code identifiers are left
    ("inline-secret", r"(?i)(?<![A-Za-z0-9_])(?:password|passwd|pwd|secret|client_secret|token|access_token|api_?key)"
                      r"=([^\s&'\"`#(),;\[\]{}<>]{5,}[^\s&'\"`#(),;\[\]{}<>:.!?])", 1),
    # Authorization headers
    ("bearer-token", r"(?i)\b(?:bearer|token)[ \t]+([A-Za-z0-9_\-.=+/~]{20,})", 1),
    ("auth-header", r"(?i)\b(?:x-api-key|api-key|x-auth-token|authorization)[\"']?[ \t]*[:=][ \t]*[\"']?([A-Za-z0-9_\-.=+/~]{16,})", 1),
]
_SECRET_NAME = r"(?<![A-Za-z0-9_.\-])" + _SECRET_NAME_BODY

# "name": "value" / name = 'value' / name => "value" in code and JSON: found from the operator, then the
# name is checked in a short window before it (a keyword-first regex is 10x slower on long texts).
_QUOTED_VALUE = re.compile(r"(?:=>|[=:])[ \t]*\\?[\"']([^\"'\s\\]{6,})\\?[\"']")
_NAME_BEFORE = re.compile(r"(?i)" + _SECRET_WORD + r"[A-Za-z0-9_.\-]*\\?[\"']?[ \t]*\Z")

# High-entropy tokens within a short distance after a secret-looking word.
_CONTEXT_WORD = r"(?i)(?:secret|passw(?:or)?d|token|api[_\- ]?key|access[_\- ]?key|credential|private[_\- ]?key|auth)"
_CANDIDATE = re.compile(_CONTEXT_WORD + r"[^\n]{0,40}?(?<![A-Za-z0-9_+/=\-])([A-Za-z0-9_+/=\-]{20,})")

# Values that look like secrets syntactically but are references, placeholders or our own markers.
_NOT_SECRET = re.compile(
    r"^(?:\$|\{|<|%|\*+$|x{6,}$|X{6,}$|\.{3}|process\.env|os\.environ|env\(|getenv|None$|null$|undefined$|true$|false$|"
    r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+$|https?://|secret$|\[REDACTED|REDACTED|changeme$|password$|your[_\-]|example|placeholder|dummy|test$|sha(?:1|256|384|512)-)", re.I)
_SECRET_KEY = re.compile(_SECRET_NAME, re.I)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MARKER = re.compile(r"\[REDACTED:[A-Za-z0-9_.\-]+\]")


def shannon_bits(s: str) -> float:
    """Entropy per character of `s` (bits)."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def _words(tok: str) -> bool:
    """Identifiers and paths (`ephemeral_1h_input_tokens`, `/Users/me/projects/x`): short plain segments."""
    segs = [s for s in re.split(r"[_\-./~=]+", tok) if s]
    return all(len(s) <= 24 and (s.islower() or s.isupper() or s.istitle() or s.isdigit()) for s in segs)


def _high_entropy(tok: str) -> bool:
    if _UUID.match(tok) or _NOT_SECRET.match(tok):
        return False
    if _HEX.match(tok):
        # Git SHAs (40), lock-file and content hashes (64) are public identifiers, not credentials.
        return len(tok) not in (40, 64) and len(tok) >= 32 and shannon_bits(tok) > 3.0
    if _words(tok):
        return False
    classes = sum(bool(re.search(p, tok)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes >= 2 and shannon_bits(tok) > 3.5


# Literal needles: a rule's regex runs only on texts containing one of them (str.find is far faster
# than a regex scan; most texts hold no candidate at all). Lower-case needles are searched in text.lower().
_NEEDLES: dict[str, tuple[str, ...]] = {
    "pem-private-key": ("PRIVATE KEY",), "anthropic-key": ("sk-ant-",), "openai-key": ("sk-",),
    "aws-key": ("AKIA", "ASIA", "ABIA", "ACCA", "AROA", "AIDA"), "gcp-api-key": ("AIza",), "gcp-oauth-token": ("ya29.",),
    "gcp-client-secret": ("GOCSPX-",), "azure-storage-key": ("accountkey=",), "azure-sas": ("sig=",),
    "github-token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "gitlab-token": ("glpat-", "gldt-", "glptt-", "glrt-", "glcbt-", "gloas-"), "huggingface-token": ("hf_",),
    "groq-key": ("gsk_",), "replicate-token": ("r8_",), "xai-key": ("xai-",), "perplexity-key": ("pplx-",),
    "openrouter-key": ("sk-or-v1-",), "slack-token": ("xox",), "slack-webhook": ("hooks.slack.com",),
    "stripe-key": ("_live_", "_test_"), "stripe-webhook-secret": ("whsec_",), "npm-token": ("npm_",),
    "pypi-token": ("pypi-AgE",), "sendgrid-key": ("SG.",), "twilio-key": ("SK",), "digitalocean-token": ("_v1_",),
    "jwt": ("eyJ",), "connection-password": ("://",),
    "env-secret": ("secret", "pass", "pwd", "token", "key", "credential", "dsn"),
    "credential": ("secret", "pass", "pwd", "token", "key", "credential", "dsn"),
    "bearer-token": ("bearer", "token"), "auth-header": ("api-key", "auth"), "cli-password": ("mysql", "mariadb", "--password"),
    "inline-secret": ("pass", "pwd", "secret", "token", "key"),
    "high-entropy": ("secret", "pass", "token", "key", "credential", "auth"),
}
_LOWER = {"azure-storage-key", "azure-sas", "env-secret", "credential", "bearer-token", "auth-header", "high-entropy",
          "inline-secret", "cli-password"}


def _lowered(pattern: str) -> re.Pattern | None:
    """The case-sensitive twin of a `(?i)` pattern, for matching lower-cased text; None if not `(?i)`."""
    m = re.match(r"\(\?([a-z]*)i([a-z]*)\)", pattern)
    if not m:
        return None
    flags = m.group(1) + m.group(2)
    return re.compile((f"(?{flags})" if flags else "") + pattern[m.end():])


_NAME_BEFORE_LOW = _lowered(_NAME_BEFORE.pattern)


def _present(name: str, text: str, lower: str, memo: dict) -> bool:
    """Whether a needle of rule `name` occurs; `memo` caches needle scans shared by several rules."""
    hay = lower if name in _LOWER else text
    for n in _NEEDLES[name]:
        key = (n, hay is lower)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = n in hay
        if hit:
            return True
    return False


@dataclass
class Redactor:
    """Callable that redacts a string and counts replacements per rule."""

    entropy: bool = True
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self):
        # (name, regex, regex for lower-cased text or None, group). Case-insensitive rules run ~7x faster as
        # case-sensitive regexes over text.lower(); spans carry over when lowering keeps the length.
        self._rules = [(n, re.compile(p, re.S), None, g, n == "connection-password") for n, p, g in _KEY_FORMATS]
        self._rules += [(n, re.compile(p), _lowered(p), g, True) for n, p, g in _ASSIGN_RULES]
        self._candidate_low = _lowered(_CANDIDATE.pattern)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        lower, memo = text.lower(), {}
        for name, rx, rx_low, grp, check in self._rules:
            if _present(name, text, lower, memo):
                new = self._sub(rx, grp, name, text, check=check, low=(rx_low, lower))
                if new is not text:
                    text, lower = new, new.lower()
        if _present("credential", text, lower, memo):
            text = self._credential(text, lower)
            lower = text.lower()
        if self.entropy and _present("high-entropy", text, lower, memo):
            text = self._sub(_CANDIDATE, 1, "high-entropy", text, check=True, entropy=True,
                             low=(self._candidate_low, lower))
        return text

    def _credential(self, text: str, lower: str) -> str:
        name_rx, hay = (_NAME_BEFORE_LOW, lower) if len(lower) == len(text) else (_NAME_BEFORE, text)
        out, pos = [], 0
        for m in _QUOTED_VALUE.finditer(text):
            val = m.group(1)
            if _NOT_SECRET.match(val) or _MARKER.search(val):
                continue
            if not name_rx.search(hay, max(0, m.start() - 64), m.start()):
                continue
            self.counts["credential"] += 1
            out += [text[pos:m.start(1)], MARK.format("credential")]
            pos = m.end(1)
        return "".join(out) + text[pos:] if out else text

    def _sub(self, rx: re.Pattern, grp: int, name: str, text: str, *, check: bool, entropy: bool = False,
             low: tuple[re.Pattern | None, str] = (None, "")) -> str:
        rx_low, lower = low
        matches = rx_low.finditer(lower) if rx_low is not None and len(lower) == len(text) else rx.finditer(text)
        out, pos = [], 0
        for m in matches:
            s, e = m.span(grp)
            val = text[s:e]
            if grp == 0 and name != "pem-private-key" and shannon_bits(val) < 3.0:
                continue  # documentation placeholders such as ghp_xxxxxxxx...
            if check and (_NOT_SECRET.match(val) or _MARKER.search(val)):
                continue
            if name == "inline-secret" and re.fullmatch(r"[a-z_]+|[A-Z_]+", val):
                continue  # api_key=api_key, token=TOKEN: code passing a variable along
            if entropy and not _high_entropy(val):
                continue
            self.counts[name] += 1
            out += [text[pos:s], MARK.format(name)]
            pos = e
        return "".join(out) + text[pos:] if out else text

    def deep(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (keys are kept: they name fields, not secrets)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self._field(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        return value

    def _field(self, key: str, value: Any) -> Any:
        # {"password": "..."}: the name alone marks the value, which has no context of its own.
        if (isinstance(value, str) and len(value) >= 6 and "\n" not in value and _SECRET_KEY.fullmatch(str(key))
                and not _NOT_SECRET.match(value) and not _MARKER.search(value)):
            self.counts["credential"] += 1
            return MARK.format("credential")
        return self.deep(value)
