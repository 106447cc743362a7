"""Secret redaction applied to every string before it leaves the parser (tokenizer, buffer, logs, disk).

Each redaction replaces a secret with a typed marker `[REDACTED:<rule>]`. Three stages run in order:

1. Assignments: a value assigned to a name that marks a secret goes, whatever the value looks like
   (rules `env-secret`, `credential`, `inline-secret`, `cli-secret`; described below).
2. Key formats: provider key shapes (AWS, GitHub, OpenAI, Anthropic, Slack, JWT, PEM blocks, ...) and
   passwords in connection strings, wherever they stand.
3. Context rules: `mysql -p...`, `Bearer` tokens, API-key headers, and long high-entropy tokens shortly
   after a word such as "secret" or "token".

Markers already present (exporters such as hive-mind write the same shape) are left as they are. Lock-file
integrity hashes, git SHAs, UUIDs and `data:` base64 payloads match no rule.

The assignment rule (name-driven, value-agnostic)
-------------------------------------------------
Secret names. A name is split at `_`, `-`, spaces and camelCase humps into parts (of a dotted name such as
`spring.datasource.x` only the last segment counts). Strong parts: anything containing secret, passw,
passphrase, passcode, passkey or credential; a part ending in pass (SMTP_PASS, dbpass; not bypass or compass)
or pwd (DB_PWD; the bare shell variables PWD and OLDPWD are directories); cred and creds. Weak parts: key or a
part ending in key (apikey; not monkey, hotkey or subkey), a part ending in token (not tokens or tokenizer),
auth or a part ending in auth (oauth; not author or authenticated), authorization, private, dsn; also keys or
tokens right after api, access, auth, bearer, refresh, session, signing, encryption, master, license or deploy.
A name marks a secret when
- it has a strong part, or two marker parts (PRIVATE_KEY_ID, AUTH_TOKEN), and its head is not a word that
  makes it name something else: file, path, dir, name, arn, ref, url, uri, endpoint, domain, host, length,
  count, size, enabled, required, policy, type, mode, format, header, prefix, ttl, timeout, provider, ...
  (PASSWORD_FILE, secretName, PASSWORD_MIN_LENGTH are not secrets);
- or its only marker is weak and is the head itself (GITHUB_TOKEN, apiKey, Authorization; not key_insights,
  token_count, AUTH_DOMAIN);
- the head is the last part once trailing modifiers are dropped (digits, v2, prod, dev, staging, test, live,
  local, old, new, backup, primary, ro, rw, b64, value, ...: API_KEY_PROD and GITHUB_TOKEN_2 are secrets);
- and no part is a quantity or flag word (max, min, num, n, per, by, total, is, has, use, enable, disable,
  allow, require, skip, no, with, without), an ML special-token word (bos, eos, pad, unk, sep, cls, mask) or
  public/pub/publishable: max_tokens, per_token, last_by_key, is_private, pad_token_id and PUBLIC_KEY are not
  secrets. The bare names key and private (mapping keys, npm's "private" flag) are not either.
`secret_name(name)` is this test.

Forms. With such a name, the value goes in
- line assignments (`env-secret`): NAME=value, NAME = value, NAME: value, NAME := value at the start of a line,
  after indentation, `export`/`set`/`declare -x`/`readonly`/`local`/`ENV`/`ARG`/PowerShell's `$env:`, a YAML or
  docker-compose list dash, a diff `+`/`-`, a comment `#` or `//`, a Read-tool or `cat -n` line-number gutter,
  or a grep `path:line:` prefix. Covers .env, shell, YAML, TOML, INI, docker-compose lists and maps, Java
  properties. A value that only opens a block (`{`, `[` or `(` alone) is a nested structure whose own
  lines are checked (a YAML flow mapping or list on the line goes whole). After a code declaration
  (`const`, `let`, `var`, `final`, `static`, `val`, a `$` or `@` sigil) and for an attribute of `self`,
  `this` or `cls` only a quoted literal is a value: the rest is an expression;
- quoted names (`credential`): "NAME": value and 'NAME' => value anywhere (JSON, Python and JS dicts, PHP;
  a value opening with `{`, `[` or `(` is a nested object or list or a code tuple, not a scalar);
- inside a line (`inline-secret`, `credential`): NAME=value after a space, `(`, `,`, `;`, `&`, `?`, `{`, `[`,
  `:` or `$` (shell env prefixes, query strings, keyword arguments, .npmrc), NAME = 'quoted' and
  NAME => 'quoted' (code), NAME: 'quoted' after `{` or `,` (object literals), and "NAME=value" or
  'Header-Name: value' inside a quoted string (value up to the closing quote). Inside a line, NAME==x and
  NAME=~x are comparisons, and a name right after `;base64,` is part of a data URI;
- command-line flags (`cli-secret`): --NAME value and --NAME=value (a value after a space must not start
  with `-`: that is the next option).
Extent. A quoted value goes up to its closing quote, backslash escapes respected (the quotes stay); if
anything but a space or `,;)]}>:&|/` follows the closing quote (shell concatenation such as 'a'"b"c), the
value runs on as if unquoted. An unquoted value of a line assignment goes to the end of the line (trailing
spaces kept), with no stop at `#` or any punctuation; inside a line it is the whole shell word (to the
next whitespace, quoted parts included); after a quoted JSON name inside a line it ends at `,`, `}` or `]`.
A quoted value of a line assignment left open at the end of its line continues up to a closing quote that
ends a line within 8 KB (a multi-line .env value); any other value left open ends with its line. A YAML
block scalar (`|`, `>`) takes its indented lines.
JSON-escaped text. Tool output is often a JSON document holding strings that hold whole files (lines
separated by a literal backslash-n, quotes written as backslash-quote). Every JSON string literal in value
position that holds an escape and a marker word is decoded, redacted as plain text (recursively: JSON in
JSON), and encoded again; names inside such a literal are then left to that pass.

Kept values: a value stays only when it names a secret instead of holding one, or holds nothing:
- empty, or nothing but `[REDACTED:...]` markers;
- an unquoted None, null, nil or undefined (typed absence in Python, JSON, YAML, Ruby, JS), except after
  a command-line flag;
- a reference or placeholder whose text mentions a marker word: $API_KEY, ${API_KEY}, ${{ secrets.TOKEN }},
  {{ .Values.password }}, %API_KEY%, <your-password-here>, or an auth scheme (Bearer, Basic, Token, Digest)
  followed by one of these or by one word of at most 24 letters and underscores that mentions a marker word
  (the placeholders `Bearer KEY`, `Bearer token`, `Bearer YOUR_API_KEY`);
- code that fetches or computes the secret and mentions a marker word: a chain of names, attributes, calls
  and subscripts whose arguments are names, numbers, name-like strings (no spaces), name=name keywords or
  help/description/doc/title/metavar strings, e.g. os.environ['GITHUB_TOKEN'], process.env.API_KEY,
  cfg.api_key, jax.random.PRNGKey(seed). A literal default such as a second getenv argument is not a
  name-like string unless it is one, so that form is redacted. Code that calls a function with two or more
  arguments, all names, numbers or calls of names (`sample(logits, now, rows)`, `f(q, self.rng.uniform())`),
  is kept without a marker word: it holds no literal; inside a line such a call is taken whole, spaces included
  (`f(token=jnp.where(a, b, c))`). So is a name mentioning a marker word followed by `,` or `;`
  (`refresh_token: refreshToken,` in a JS object), or by `,` or `}` after a quoted name (`{"token": token}` in
  a Python dict). Inside quotes none of this is code: `"cfg.api_key"` is a string;
- a type annotation in a line assignment (Python `api_key: str | None`, TypeScript `token?: string;`) made
  of known type names (str, int, bool, Any, Optional, string, number, ...) or module-qualified types
  (jax.Array, np.ndarray); after such an annotation, ` = default` is judged as the value.
Numbers and booleans are never kept: a numeric PIN is a secret. No random value of printable characters
survives except by spelling out one of these shapes exactly (tests/ingest/test_redact_properties.py).

Measured: benchmarks/redaction.py (false positives on the real transcripts and this repo's code, throughput;
figures in benchmarks/RESULTS.md). tests/ingest/test_ingest_redact.py plants secrets in realistic contexts
and checks that ordinary code is left alone.
"""

from __future__ import annotations

import functools
import json
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


# ---------------------------------------------------------------------------------------------------------
# Stage 1: assignments to secret names

# Marker words: every secret name contains one (found in lower-cased text, then the name is classified).
_STEM = re.compile(r"pass|pwd|secret|token|key|cred|auth|private|dsn")
_STEM_I = re.compile(_STEM.pattern, re.I)
_NAME_CH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_SPLIT = re.compile(r"[_\-\s]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

# Ordinary words that end like a marker word.
_ORDINARY = frozenset(("bypass compass surpass overpass underpass trespass encompass "
                       "monkey donkey turkey hockey whiskey jockey hotkey turnkey subkey").split())
_PLURAL_AFTER = frozenset("api access auth bearer refresh session signing encryption master license deploy".split())
_MODIFIERS = frozenset(("prod production dev development staging stage test testing live local ci old new prev "
                        "previous next current backup primary secondary ro rw readonly b64 base64 hex raw enc "
                        "encrypted value val").split())
_HEADS = frozenset(("file files path paths dir directory name names arn ref refs url uri urls endpoint domain host "
                    "length len count size enabled disabled required optional policy prompt field label placeholder "
                    "hint pattern regex format type types kind mode env var header headers prefix suffix expiry "
                    "expires expiration ttl timeout lifetime age provider").split())
_WEAK_HEADS = _HEADS | {"id", "ids", "index", "idx"}
_QUALIFIERS = frozenset(("max min num n per by total is has use enable disable allow require skip no with without "
                         "next page continuation public pub publishable "
                         "bos eos pad unk sep cls mask att attn attention ffn mlp qkv proj").split())
_MODIFIER_RX = re.compile(r"\d+|v\d+")


def _strong(p: str) -> bool:
    p = p.rstrip("0123456789") or p  # PASS2, token1
    return (("secret" in p and not p.startswith("secretar")) or "passw" in p or "passphrase" in p
            or "passcode" in p or "passkey" in p or "credential" in p or p == "cred"
            or p.endswith(("creds", "pwd")) or (p.endswith("pass") and p not in _ORDINARY))


def _weak(p: str, prev: str) -> bool:
    p = p.rstrip("0123456789") or p
    return ((p.endswith("key") and p not in _ORDINARY) or p.endswith(("token", "auth", "dsn"))
            or p in ("authorization", "private")
            or (p in ("keys", "tokens") and prev in _PLURAL_AFTER))


@functools.lru_cache(maxsize=8192)
def secret_name(name: str) -> bool:
    """Whether a value assigned to `name` is a secret (the test is described in the module docstring)."""
    leaf = name.strip(".-").rsplit(".", 1)[-1]
    parts = [p.lower() for p in _SPLIT.split(leaf) if p]
    if not parts or parts in (["pwd"], ["oldpwd"], ["key"], ["private"]):
        return False
    if any(p in _QUALIFIERS for p in parts):
        return False
    core = parts
    while len(core) > 1 and (core[-1] in _MODIFIERS or _MODIFIER_RX.fullmatch(core[-1])):
        core = core[:-1]
    strong = sum(map(_strong, core))
    weak = [i for i, p in enumerate(core) if not _strong(p) and _weak(p, core[i - 1] if i else "")]
    if strong or len(weak) >= 2:
        return core[-1] not in _HEADS
    return bool(weak) and weak[-1] == len(core) - 1 and core[-1] not in _WEAK_HEADS


# Where a line assignment may start: indentation, a grep `path:line:` prefix, a line-number gutter, list,
# diff, quote and comment marks, shell/Dockerfile/JS declaration keywords, `$` or PowerShell's `$env:`.
_LINE_PREFIX = re.compile(
    r"[ \t]*(?:[\w./~\-]+:(?:\d+[:\-])?)?[ \t]*(?:\d+(?:→|\t|[:\-]|\.[ \t]))?[ \t]*"
    r"(?:(?:[-+>*]+|#+|//|\d+\.)[ \t]*)?"
    r"(?:(?:export|set|setx|ENV|ARG|declare(?:[ \t]+-\w+)*|readonly|local)[ \t]+|\$env:"
    r"|(?P<code>(?:const|let|var|final|static|val)[ \t]+|\$|@))?")
_MID_BEFORE = frozenset(" \t(,;&?{[:$@|`")
_AFTER_QUOTE_STOP = frozenset(" \t\r\n,;)]}>:&|/")

_DQ = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SQ = re.compile(r"'(?:[^'\\]|\\.)*'", re.S)
_WORD = re.compile(r"""(?:[^\s"'\\]|\\.|"(?:[^"\\\r\n]|\\.)*"|'[^'\r\n]*')+""")
_JSON_SCALAR = re.compile(r"[^\s,}\]]+")
_IN_DQ = re.compile(r'(?:[^"\\\r\n]|\\.)*')
_IN_SQ = re.compile(r"(?:[^'\\\r\n]|\\.)*")
_EOL = re.compile(r"[\r\n]")
_ESC_VALUE = re.compile(r'(?:[^\\"\r\n]|\\[^nr\r\n])*')   # up to a literal backslash-n/r or an unescaped quote
_JSON_STRING = re.compile(r'"((?:[^"\\\r\n]|\\.)*)"')
_BLOCK_SCALAR = re.compile(r"[|>][-+]?\d?")
_JSON_GLUE = re.compile(r"[\s,:\[\]{}]*")
_OPENER = re.compile(r"[{\[(]")
_QUOTE_LIMIT = 8192

# Values that name a secret instead of holding one (see the docstring); each must mention a marker word.
_MARKERS_ONLY = re.compile(r"(?:\s*\[REDACTED:[\w.\-]+\])+\s*")
_ABSENT = re.compile(r"None|null|nil|undefined")
_REFERENCE = re.compile(r"\$\{?[A-Za-z_]\w*\}?|\$\{\{[^{}\r\n]*\}\}|\{\{[^{}\r\n]*\}\}|%[A-Za-z_]\w*%|<[\w .\-/|]*>")
_SCHEME = re.compile(r"(?i)(?:bearer|basic|token|digest)[ \t]+(.+)")
_WORD_ONLY = re.compile(r"[A-Za-z_]{1,24}")
_ENTRY = re.compile(r"[A-Za-z_$][\w$]*\s*[,;]")
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_ID = r"[A-Za-z_$][\w$]*"
_PLAIN = rf"(?:{_ID}(?:\.{_ID})*|-?\d+(?:\.\d+)?)"
# a call whose arguments are names or numbers holds no literal (`self.sampler.uniform()`, `f(a, b.c)`)
_INNER_CALL = rf"{_ID}(?:\.{_ID})*\(\s*(?:{_PLAIN}\s*(?:,\s*{_PLAIN}\s*)*)?\)"
_ARG = (rf"(?:{_INNER_CALL}|{_ID}(?:\.{_ID})*|-?\d+(?:\.\d+)?|\"[\w.\-/:]*\"|'[\w.\-/:]*'"
        rf"|(?:help|description|doc|title|metavar)\s*=\s*(?:\"[^\"\r\n]*\"|'[^'\r\n]*')|{_ID}\s*=\s*(?:{_ID}|-?\d+))")
_ARGS = rf"\s*(?:{_ARG}\s*(?:,\s*{_ARG}\s*)*,?)?\s*"
_CODE = re.compile(rf"(?:await\s+|new\s+)?{_ID}(?:\s*\.\s*{_ID}|\({_ARGS}\)|\[{_ARGS}\])+\s*[;,]?")
_NAME_OR_NUMBER = rf"(?:{_INNER_CALL}|{_PLAIN})"
_CALL_OF_NAMES = re.compile(rf"\(\s*{_NAME_OR_NUMBER}\s*(?:,\s*{_NAME_OR_NUMBER}\s*)+\)")
_OWN_ATTRIBUTE = re.compile(r"(?:self|this|cls)\.")
_TYPE_WORDS = frozenset(("str int float bool bytes bytearray complex dict list tuple set frozenset object type Any "
                         "None Optional Union Callable Sequence Mapping Iterable Iterator Literal string number "
                         "boolean any unknown undefined null void never bigint symbol Record Promise Array Partial "
                         "Map Set").split())
_TYPE_MODULES = frozenset("jax jnp np numpy torch tf pd typing npt collections".split())
_TYPE_SHAPE = re.compile(r"[A-Za-z_][\w.\[\]<>|, ?]*")
_TYPE_IDENT = re.compile(r"[A-Za-z_][\w.]*")
_PY_COMMENT = re.compile(r"\s+#.*\Z", re.S)


def _is_type(v: str) -> bool:
    v = v.strip().rstrip(";,").strip()
    if not v or not _TYPE_SHAPE.fullmatch(v):
        return False
    return all(t in _TYPE_WORDS or ("." in t and t.split(".", 1)[0] in _TYPE_MODULES) for t in _TYPE_IDENT.findall(v))


def _mentions_marker(v: str) -> bool:
    return _STEM.search(v.lower()) is not None


def _unclosed_tail(v: str) -> str:
    """`v` without trailing `)`, `]`, `,`, `;` that close nothing opened in it (a keyword argument's word)."""
    while v and (v[-1] in ",;" or (v[-1] == ")" and v.count(")") > v.count("("))
                 or (v[-1] == "]" and v.count("]") > v.count("["))):
        v = v[:-1].rstrip()
    return v


def _kept(value: str, quoted: bool) -> bool:
    """Whether an assigned value stays: it names a secret instead of holding one, or holds nothing."""
    v = value.strip()
    if not v:
        return not quoted or not value  # a quoted blank is a value
    if _MARKERS_ONLY.fullmatch(v) or (not quoted and _ABSENT.fullmatch(v)):
        return True
    if not quoted:
        v = _unclosed_tail(v)
    # inside quotes `a.key` is a string, not an expression: only an unquoted value can be code
    code = not quoted and len(v) <= 400 and _CODE.fullmatch(v) is not None
    if code and _CALL_OF_NAMES.search(v):
        return True  # f(a, b.c, 2): computed from variables, no literal in it
    if not _mentions_marker(v):
        return False
    if code or _REFERENCE.fullmatch(v):
        return True
    if _ENTRY.fullmatch(value.strip()):
        return True  # `refresh_token: refreshTokenValue,` in a JS object, `token = nextToken;`
    m = _SCHEME.fullmatch(v)
    if not m:
        return False
    rest = m.group(1).strip()
    return _REFERENCE.fullmatch(rest) is not None or (_WORD_ONLY.fullmatch(rest) is not None and _mentions_marker(rest))


def _odd_backslashes(text: str, i: int) -> bool:
    """Whether text[i] (a backslash) starts an escape: an odd run of backslashes ends at i."""
    j = i
    while j >= 0 and text[j] == "\\":
        j -= 1
    return (i - j) % 2 == 1


class _Assignments:
    """Finds secret-name assignments in one text and returns it with their values replaced."""

    def __init__(self, owner: "Redactor"):
        self.owner = owner

    def __call__(self, text: str, lower: str | None = None, depth: int = 0) -> str:
        spans: list[tuple[int, int]] = []
        if "\\" in text and depth < 4:
            text, spans = self._escaped(text, depth)
        if lower is None or spans:
            lower = text.lower()
        # spans found in lower-cased text carry over only if lowering kept the length
        return _Scan(text, self.owner.counts).run(lower if len(lower) == len(text) else None, spans)

    # JSON string literals holding escaped text ----------------------------------------------------------
    def _escaped(self, text: str, depth: int) -> tuple[str, list[tuple[int, int]]]:
        out, pos, size, spans = [], 0, 0, []
        for m in _JSON_STRING.finditer(text):
            body = m.group(1)
            if "\\" not in body or not _mentions_marker(body):
                continue
            p = m.start() - 1
            while p >= 0 and text[p] in " \t":
                p -= 1
            if p >= 0 and text[p] not in ":[,{(=\r\n":
                continue
            try:
                decoded = json.loads(m.group(0))
            except ValueError:
                continue
            new = self(decoded, None, depth + 1)
            enc = body if new == decoded else json.dumps(new, ensure_ascii="\\u" in body)[1:-1]
            piece = text[pos:m.start(1)]
            out += [piece, enc]
            size += len(piece)
            spans.append((size, size + len(enc)))
            size += len(enc)
            pos = m.end(1)
        if not spans:
            return text, []
        out.append(text[pos:])
        return "".join(out), spans


class _Scan:
    """One pass over one text: finds secret-name assignments and replaces their values."""

    def __init__(self, text: str, counts: Counter):
        self.text, self.n, self.counts = text, len(text), counts
        self._ls, self._ls_from = 0, 0
        self._eol_from, self._eol_at = 0, -1

    def _eol(self, i: int) -> int:
        """End of the line holding position i (cached: one long line is searched once, not per value)."""
        if not (self._eol_from <= i <= self._eol_at):
            self._eol_from, self._eol_at = i, _eol(self.text, i, self.n)
        return self._eol_at

    def run(self, lower: str | None, spans: list[tuple[int, int]]) -> str:
        text = self.text
        hits = _STEM.finditer(lower) if lower is not None else _STEM_I.finditer(text)
        out, pos, nxt, si = [], 0, 0, 0
        for m in hits:
            if m.start() < nxt:
                continue
            while si < len(spans) and spans[si][1] <= m.start():
                si += 1
            if si < len(spans) and spans[si][0] <= m.start():
                nxt = spans[si][1]
                continue
            found = self._candidate(m.start(), m.end())
            if found is None:
                continue
            name_end, span = found
            nxt = name_end
            if span is None:
                continue
            rule, vs, ve = span
            if vs < pos or ve <= vs:
                continue
            self.counts[rule] += 1
            out += [text[pos:vs], MARK.format(rule)]
            pos = nxt = ve
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def _line_start(self, i: int) -> int:
        """Start of the line holding position i (found incrementally: positions mostly increase)."""
        text = self.text
        if i < self._ls_from:
            self._ls, self._ls_from = 0, 0
        k = max(text.rfind("\n", self._ls_from, i), text.rfind("\r", self._ls_from, i))
        if k >= 0:
            self._ls = k + 1
        self._ls_from = i
        return self._ls

    def _candidate(self, a: int, b: int):
        """For a marker word at text[a:b]: (end of the name, (rule, value start, value end) or None) or None."""
        text, n = self.text, self.n
        s, e = a, b
        while s > 0 and a - s < 128 and text[s - 1] in _NAME_CH:
            s -= 1
        while e < n and e - b < 128 and text[e] in _NAME_CH:
            e += 1
        esc_line = False
        if s > 0 and text[s - 1] == "\\" and _odd_backslashes(text, s - 1):
            if text[s] in "nrt":
                esc_line, s = text[s] in "nr", s + 1
            elif text[s] == "u" and re.fullmatch(r"u[0-9a-fA-F]{4}", text[s:s + 5]):
                s += 5
            if s >= a:
                return None
        dashes = len(text[s:e]) - len(text[s:e].lstrip("-"))
        flag = dashes >= 2
        s += dashes
        while s < a and text[s] == ".":
            s += 1
        while e > b and text[e - 1] in ".-":
            e -= 1
        if not secret_name(text[s:e]):
            return e, None
        if flag:
            return e, self._flag(s - dashes, e)
        q = text[s - 1] if s > 0 and text[s - 1] in "\"'" and not dashes else ""
        quoted_name = bool(q) and e < n and text[e] == q
        k = e + 1 if quoted_name else e
        while k < n and text[k] in " \t":
            k += 1
        spaced = k > (e + 1 if quoted_name else e)
        if text.startswith("=>", k) or text.startswith(":=", k):
            op, olen = text[k], 2
        elif k < n and text[k] == "=" and not (k > 0 and text[k - 1] in "!<>"):
            op, olen = "=", 1  # `NAME==x`, `NAME=~x` compare unless they start a line (then the value is `=x`)
        elif text.startswith("?:", k):
            op, olen = ":", 2
        elif k < n and text[k] == ":" and text[k + 1:k + 2] not in (":", "="):
            op, olen = ":", 1
        else:
            return e, None
        arrow = text.startswith("=>", k)
        vs = k + olen
        gap = vs
        while vs < n and text[vs] in " \t":
            vs += 1
        if vs >= n or text[vs] in "\r\n" or (esc_line and text[vs] == "\\" and text[vs + 1:vs + 2] in ("n", "r")):
            return e, None  # nothing on this line
        start = s - 1 if q else s
        if esc_line:
            end = _ESC_VALUE.match(text, vs).end()
            return e, _checked("env-secret", text, vs, _rstrip(text, vs, end), False)
        if quoted_name:
            if text[vs] in "{[(":
                return e, None  # a nested object or list, or a code tuple: its own names are checked
            line = self._is_line_start(start) is True
            return e, self._value(vs, "credential", line, json_mid=not line)
        if q:  # "NAME=value" or 'Header: value' inside a quoted string: up to its closing quote
            end = (_IN_DQ if q == '"' else _IN_SQ).match(text, vs).end()
            if end >= n or text[end] != q:
                end = self._eol(vs)
            return e, _checked("credential" if op == ":" else "inline-secret", text, vs, _rstrip(text, vs, end), False)
        line = self._is_line_start(s)
        if line and _OWN_ATTRIBUTE.match(text, s, e):
            line = None  # `self.api_key = key`: an attribute set in code, where only a quoted literal is a value
        if op == "=" and olen == 1 and text[k + 1:k + 2] in ("=", "~") and not line:
            return e, None
        if line:
            if op == ":" and gap == vs and not text.startswith("?:", k):
                return e, None  # `name:value` is not a YAML mapping
            return e, self._line_value(s - dashes, vs, op)
        before = text[s - 1] if s > 0 else " "
        if op == "=" and not spaced and not arrow and line is not None:
            if before not in _MID_BEFORE or text.endswith(";base64,", 0, s):
                return e, None
            return e, self._value(vs, "inline-secret", False)
        if text[vs] not in "\"'":
            return e, None  # code: `x.token = compute()`, `def f(token: str)`
        if op == ":":
            p = s - 1
            while p >= 0 and text[p] in " \t":
                p -= 1
            if p < 0 or text[p] not in "{,":
                return e, None
        return e, self._value(vs, "credential", False)

    def _is_line_start(self, start: int) -> bool | None:
        """True at the start of a line, None after a code declaration (`const`, `let`, `$`...), else False."""
        text = self.text
        ls = self._line_start(start)
        m = _LINE_PREFIX.fullmatch(text, ls, start) if start - ls <= 200 else None
        return None if m is not None and m.group("code") else m is not None

    def _flag(self, s: int, e: int):
        text, n = self.text, self.n
        if e < n and text[e] == "=":
            vs = e + 1
        else:
            vs = e
            while vs < n and text[vs] in " \t":
                vs += 1
            if vs == e or vs >= n or text[vs] in "-\r\n":
                return None
        if vs >= n or text[vs] in " \t\r\n":
            return None
        return self._value(vs, "cli-secret", False)

    def _value(self, vs: int, rule: str, line: bool, json_mid: bool = False):
        """The span of a value starting at vs: quoted, else to the end of the line (line forms), the end of a
        JSON scalar (after a quoted name inside a line) or the end of the shell word."""
        text, n = self.text, self.n
        c = text[vs]
        if c in "\"'":
            m = (_DQ if c == '"' else _SQ).match(text, vs, min(n, vs + _QUOTE_LIMIT))
            eol = self._eol(vs)
            if m is not None and m.end() > eol and not (line and not text[m.end():_eol(text, m.end(), n)].strip()):
                m = None  # it closes on a later line, but not as a multi-line value (closing quote, line end)
            if m is None:  # left open on its line: the rest of the line
                return _checked(rule, text, vs, _rstrip(text, vs, eol), False)
            j = m.end()
            if j < n and text[j] not in _AFTER_QUOTE_STOP and not (text[j] == "\\" and text[j + 1:j + 2] in ("n", "r")):
                if not line and _JSON_GLUE.fullmatch(text, vs + 1, j - 1):
                    return None  # `...secret=","path"...`: the quote closed an enclosing string
                end = self._eol(vs) if line else _WORD.match(text, vs).end()
                return _checked(rule, text, vs, _rstrip(text, vs, end), False)
            return _checked(rule, text, vs + 1, j - 1, True)
        if line:
            return _checked(rule, text, vs, _rstrip(text, vs, self._eol(vs)), False)
        if json_mid:
            end = _JSON_SCALAR.match(text, vs).end()
            if text[end:end + 1] in (",", "}") and _IDENT.fullmatch(text, vs, end) and _mentions_marker(text[vs:end]):
                return None  # {"token": token, ...}: a dict entry that passes a variable along
            return _checked(rule, text, vs, end, False)
        end = _WORD.match(text, vs).end()
        if "(" in text[vs:end]:
            full = _balanced_end(text, vs, self._eol(vs))
            if full > end and _kept(text[vs:full], False):
                return None  # `f(token=jnp.where(a, b, c))`: a keyword argument computed from names
        return _checked(rule, text, vs, end, False)

    def _line_value(self, start: int, vs: int, op: str):
        text = self.text
        c = text[vs]
        end = _rstrip(text, vs, self._eol(vs))
        if _OPENER.fullmatch(text, vs, end):
            return None  # a mapping, list or block opened here: its own lines are checked
        if c not in "\"'" and op == ":":
            v = text[vs:end]
            if _BLOCK_SCALAR.fullmatch(v):
                return self._block(start, end)
            eq = v.find("=")
            typ = v if eq < 0 else v[:eq]
            if _is_type(_PY_COMMENT.sub("", typ) if eq < 0 else typ):
                if eq < 0:
                    return None
                vs += eq + 1
                while vs < end and text[vs] in " \t":
                    vs += 1
                if vs >= end:
                    return None
                c = text[vs]
        if c in "\"'":
            return self._value(vs, "env-secret", True)
        return _checked("env-secret", text, vs, end, False)

    def _block(self, start: int, end: int):
        """A YAML block scalar whose indicator ends at `end`: the following lines indented deeper than the
        line holding the name (blank lines included)."""
        text, n = self.text, self.n
        ls = self._line_start(start)
        indent = len(text[ls:start]) - len(text[ls:start].lstrip(" \t"))
        pos, first, last = end, None, None
        while pos < n and text[pos] in "\r\n":
            pos += 1
            line_end = _eol(text, pos, n)
            line = text[pos:line_end]
            if line.strip(" \t"):
                if len(line) - len(line.lstrip(" \t")) <= indent:
                    break
                first = pos + len(line) - len(line.lstrip(" \t")) if first is None else first
                last = line_end
            pos = line_end
        return None if first is None else _checked("env-secret", text, first, last, False)


def _balanced_end(text: str, vs: int, eol: int) -> int:
    """End of the bracketed expression starting at vs (the first point where every bracket opened since vs is
    closed, after at least one opened), or vs when it does not close on its line or holds a string literal."""
    depth, opened = 0, False
    for i in range(vs, eol):
        c = text[i]
        if c in "([":
            depth, opened = depth + 1, True
        elif c in ")]":
            depth -= 1
            if depth < 0:
                return vs
            if depth == 0 and opened:
                return i + 1
        elif c in "\"'":
            return vs
    return vs


def _eol(text: str, i: int, n: int) -> int:
    m = _EOL.search(text, i)
    return m.start() if m else n


def _rstrip(text: str, vs: int, end: int) -> int:
    while end > vs and text[end - 1] in " \t":
        end -= 1
    return end


def _checked(rule: str, text: str, vs: int, ve: int, quoted: bool):
    # a command-line value is a string even when it reads None or null
    if ve <= vs or _kept(text[vs:ve], quoted or rule == "cli-secret"):
        return None
    return rule, vs, ve


# ---------------------------------------------------------------------------------------------------------
# Stages 2 and 3: key formats and context rules

_CONTEXT_RULES: list[tuple[str, str, int]] = [
    # mysql -p'secret' / mysql -psecret
    ("cli-password", r"\b(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n]*?\s-p(['\"]?)([^\s'\"]{3,}[^\s'\",;.:!?])\1", 2),
    # Authorization headers
    ("bearer-token", r"(?i)\b(?:bearer|token)[ \t]+([A-Za-z0-9_\-.=+/~]{20,})", 1),
    ("auth-header", r"(?i)\b(?:x-api-key|api-key|x-auth-token|authorization)[\"']?[ \t]*[:=][ \t]*[\"']?([A-Za-z0-9_\-.=+/~]{16,})", 1),
]

# High-entropy tokens within a short distance after a secret-looking word.
_CONTEXT_WORD = r"(?i)(?:secret|passw(?:or)?d|token|api[_\- ]?key|access[_\- ]?key|credential|private[_\- ]?key|auth)"
_CANDIDATE = re.compile(_CONTEXT_WORD + r"[^\n]{0,40}?(?<![A-Za-z0-9_+/=\-])([A-Za-z0-9_+/=\-]{20,})")

# Values of stages 2 and 3 that look like secrets syntactically but are references, placeholders or markers.
_PLACEHOLDER = re.compile(
    r"^(?:\$|\{|<|%|\*+$|x{6,}$|X{6,}$|\.{3}|process\.env|os\.environ|env\(|getenv|None$|null$|undefined$|true$|false$|"
    r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+$|https?://|secret$|\[REDACTED|REDACTED|changeme$|password$|your[_\-]|example|placeholder|dummy|test$|sha(?:1|256|384|512)-)", re.I)
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
    if _UUID.match(tok) or _PLACEHOLDER.match(tok):
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
    "bearer-token": ("bearer", "token"), "auth-header": ("api-key", "auth"), "cli-password": ("mysql", "mariadb"),
    "high-entropy": ("secret", "pass", "token", "key", "credential", "auth"),
}
_LOWER = {"azure-storage-key", "azure-sas", "bearer-token", "auth-header", "high-entropy", "cli-password"}


def _lowered(pattern: str) -> re.Pattern | None:
    """The case-sensitive twin of a `(?i)` pattern, for matching lower-cased text; None if not `(?i)`."""
    m = re.match(r"\(\?([a-z]*)i([a-z]*)\)", pattern)
    if not m:
        return None
    flags = m.group(1) + m.group(2)
    return re.compile((f"(?{flags})" if flags else "") + pattern[m.end():])


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
        self._assign = _Assignments(self)
        self._rules = [(n, re.compile(p, re.S), None, g, n == "connection-password") for n, p, g in _KEY_FORMATS]
        self._rules += [(n, re.compile(p), _lowered(p), g, True) for n, p, g in _CONTEXT_RULES]
        self._candidate_low = _lowered(_CANDIDATE.pattern)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        lower = text.lower()
        new = self._assign(text, lower)
        if new is not text:
            text, lower = new, new.lower()
        memo: dict = {}
        for name, rx, rx_low, grp, check in self._rules:
            if _present(name, text, lower, memo):
                new = self._sub(rx, grp, name, text, check=check, low=(rx_low, lower))
                if new is not text:
                    text, lower = new, new.lower()
        if self.entropy and _present("high-entropy", text, lower, memo):
            text = self._sub(_CANDIDATE, 1, "high-entropy", text, check=True, entropy=True,
                             low=(self._candidate_low, lower))
        return text

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
            if check and (_PLACEHOLDER.match(val) or _MARKER.search(val)):
                continue
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
        # A field whose name marks a secret: the name alone decides, the value has no context of its own.
        if isinstance(key, str) and secret_name(key):
            if isinstance(value, str) and not _kept(value, True):
                self.counts["credential"] += 1
                return MARK.format("credential")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.counts["credential"] += 1
                return MARK.format("credential")
        return self.deep(value)
