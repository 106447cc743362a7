"""Secret redaction applied to every string before it leaves the parser (tokenizer, buffer, logs, disk).

Each redaction replaces a secret with a typed marker `[REDACTED:<rule>]`. Four stages run in order (after
zero-width characters between two name characters are dropped: U+200B/200C/200D/2060/FEFF there can only hide
a name such as API_<ZWSP>KEY; emoji and scripts that join with them elsewhere keep theirs):

1. Assignments: a value assigned to a name that marks a secret goes, whatever the value looks like
   (rules `env-secret`, `credential`, `inline-secret`, `cli-secret`; described below).
2. Key formats: provider key shapes (AWS, GitHub, OpenAI, Anthropic, Slack, JWT, PEM blocks, ...) and
   passwords in connection strings, wherever they stand. A PEM private-key block is found also when
   hard-wrapped (`fold -w 60`: a line break anywhere inside its BEGIN and END lines). A connection string's
   userinfo may have an empty user (redis://:pw@host), and an unencoded `@` in the password belongs to it:
   the last `@` before the host ends the userinfo.
3. Context rules: `mysql -p...`, `Bearer` tokens, API-key headers.
4. Forms found by their context (below), then long high-entropy tokens shortly after a word such as
   "secret" or "token".

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
  secrets. The bare names key and private (mapping keys, npm's "private" flag) are not either;
- nor is a key named after what it looks up (cache, sort, partition, primary, foreign, lookup, dedupe,
  idempotency, routing, shard, group, row, map, dict, composite, unique, react: prompt_cache_key, sort_key,
  PARTITION_KEY), unless a strong part makes it a secret.
`secret_name(name)` is this test.

Forms. With such a name, the value goes in
- line assignments (`env-secret`): NAME=value, NAME = value, NAME: value, NAME := value at the start of a line,
  after indentation, `export`/`set`/`declare -x`/`readonly`/`local`/`ENV`/`ARG`/PowerShell's `$env:`, a YAML or
  docker-compose list dash, a diff `+`/`-`, a comment `#` or `//`, a Read-tool or `cat -n` line-number gutter,
  or a grep `path:line:` prefix. Covers .env, shell, YAML, TOML, INI, docker-compose lists and maps, Java
  properties. A value that only opens a block (`{`, `[` or `(` alone) is a nested structure whose own
  lines are checked (a YAML flow mapping or list on the line goes whole), except a `(` followed by lines
  of string literals only (commas and comments allowed) up to the closing `)`: a Python implicit
  concatenation, whose literals go. A value that is a lone backslash (a shell line continuation) is on the
  next line, which goes (and the lines after it while each ends with a backslash). After a code declaration
  (`const`, `let`, `var`, `final`, `static`, `val`, a `$` or `@` sigil) and for an attribute of `self`,
  `this` or `cls` only a quoted literal is a value: the rest is an expression;
- quoted names (`credential`): "NAME": value and 'NAME' => value anywhere (JSON, Python and JS dicts, PHP;
  a value opening with `[` or `(` is a nested list or a code tuple, not a scalar; one opening with `{` is a
  nested object whose string and number values all go, within 4 KB, as in Terraform state, where the
  secret sits in the `value` field of an object under the name; its keys, true, false and null stay);
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

Forms found by their context (stage 4)
--------------------------------------
- PEM private keys in pieces (`pem-private-key`): a BEGIN line followed by key material without its END
  runs to the end of the text; an END line preceded by key material without a BEGIN runs from the start of
  the text (a key split across two tool results). PuTTY keys (`ppk-private-key`): the N lines after
  `Private-Lines: N`, and the `Private-MAC:` value.
- Base64 (`base64-secret`): runs of two or more whole lines of base64 (40+ characters, two or more of
  upper case, lower case and digits, above 4 bits per character; a shorter last line joins the run), unless
  they sit under a public armour line (CERTIFICATE, PUBLIC KEY, PGP SIGNATURE...) or are hexadecimal; and
  any base64 word of 40+ characters (or one such line and a shorter last line), not after `;base64,`, that
  decodes (up to 64 KB) to printable UTF-8 text which this redactor would change (a key in kubeconfig's
  `client-key-data`, a base64-encoded .env). The decoded text is checked one level deep.
- URL authorities: a random-looking token as the URL user (`url-token`; scheme://TOKEN@host, not `git@` or
  plain names), and Oracle connect strings user/PW@//host and user/PW@host:port/service
  (`connection-password`).
- Command lines (`cli-password`, `cli-secret`): what follows the first colon of curl's -u/--user value,
  the value after -p for sshpass and for `docker|podman|nerdctl|buildah|skopeo|oras|helm registry login`,
  of openssl's -passin, -passout and -pass after `pass:`, the last argument of htpasswd with the b
  flag, the VALUE of kubectl's --from-literal=NAME=VALUE
  when NAME is a secret name (above).
- .netrc (`netrc-password`): the word after `password` at the start of a line or after
  `machine H login U` on one line. Cookies (`cookie`): the value of a Set-Cookie header's first pair, every
  value of a Cookie header, every value of curl's -b/--cookie NAME=VALUE argument (an argument without `=`
  is a cookie jar file). Chat webhooks (`webhook-url`): Discord (discord.com, discordapp.com) and
  Microsoft Teams (*.webhook.office.com/webhookb2, outlook.office.com/webhook) URLs whole.
- Prose (`prose-password`): the word or quoted phrase after password, passwd, passphrase, passcode or pw
  followed by is, was, will be, would be, should be or a colon (case-insensitive), unless it is a common
  English word (wrong, required, set, the, not... `_PROSE_WORDS`), a type, a reference or placeholder, a call
  (`z.string()`), or a variable naming the secret (hashedPassword, user_password).
- Shells (`shell-echo`): the random-looking word in `bash: WORD: command not found`, `zsh: command not
  found: WORD`, `sh: 1: WORD: not found`. File names (`path-secret`): a random-looking component (32+
  characters of letters, digits, `_-+=`; upper, lower and digits; over 14 distinct characters and 3.9 bits
  per character) of an absolute, ~/ or ./ path whose other components are plain names. A text that is
  nothing but such a token (`bare-secret`; a secret typed as a command or pasted alone). The line printed
  after `terraform output [-raw] NAME` when NAME is a secret name (`terraform-output`). When the command and
  its output are two texts (a tool use and its result), `Redactor.printed_secret(command, output)` redacts
  the whole output of `terraform output`, `printenv NAME` or `echo $NAME` for a secret NAME (`prints_secret`).
Values of these forms that are references or placeholders ($NAME, ${NAME}, %NAME%, <your-password>) stay.

Measured: benchmarks/redaction.py (false positives on the real transcripts and this repo's code, throughput;
figures in benchmarks/RESULTS.md). tests/ingest/test_ingest_redact.py plants secrets in realistic contexts
and checks that ordinary code is left alone.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MARK = "[REDACTED:{}]"



def _wrapped(literal: str) -> str:
    """A pattern for `literal` that also matches it hard-wrapped (`fold -w 60`): a line break may sit anywhere."""
    return r"(?:\r?\n)?".join(re.escape(c) for c in literal)


# PEM private-key armour lines, whole or hard-wrapped; between BEGIN/END and PRIVATE the key type (RSA, EC,
# OPENSSH, ENCRYPTED, ...) in capitals.
_PEM_KIND = _wrapped("PRIVATE KEY") + r"(?:" + _wrapped(" BLOCK") + r")?" + _wrapped("-----")
_PEM_BEGIN = _wrapped("-----BEGIN ") + r"(?:[A-Z0-9 ]|\r?\n){0,40}?" + _PEM_KIND
_PEM_END = _wrapped("-----END ") + r"(?:[A-Z0-9 ]|\r?\n){0,40}?" + _PEM_KIND

# (rule name, pattern, group holding the secret or 0 for the whole match)
_KEY_FORMATS: list[tuple[str, str, int]] = [
    ("pem-private-key", _PEM_BEGIN + r".*?" + _PEM_END, 0),
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
    # any userinfo `user:password@` (the user may be empty, as in redis://:pw@host); an unencoded `@` in the
    # password belongs to it: the last `@` before the host ends the userinfo
    ("connection-password", r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s:/@'\"]*:([^\s/'\"]{3,})@[^\s/'\"@]", 1),
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
# `<what>_key` where <what> is what the key indexes: an identifier of a row, entry or cache line, not a credential
_LOOKUP = frozenset(("cache sort partition primary foreign lookup dedupe dedup idempotency routing shard group row "
                     "map dict composite unique react").split())


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
    if len(core) >= 2 and core[-1] == "key" and core[-2] in _LOOKUP:
        return False
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
_SHELL_DECL = re.compile(r"\b(?:export|declare|readonly|local|set|ENV|ARG)\b[^\r\n]*\Z")
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
_TYPE_WORDS = frozenset(("str int float bool bytes bytearray complex dict list tuple set frozenset object Any "
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
            for rule, vs, ve in (span if isinstance(span, list) else [span]):
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
            if text[vs] == "{":
                return e, self._nested(vs)  # Terraform state: an object with a value field under the name
            if text[vs] in "[(":
                return e, None  # a nested list or a code tuple: its own names are checked
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
        if text[vs:end] == "\\" and op == "=" and text[vs - 1] == "=" and self._shell_continuation(start, end):
            return self._continued(end)  # a line continuation: the value is on the next line
        if text[vs:end] == "(":
            return self._concatenated(end)  # API_TOKEN = ( "..." "..." ): implicit concatenation
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

    def _shell_continuation(self, start: int, end: int) -> bool:
        """Whether `NAME=\\` ending at `end` continues on the next line as in a shell: after export, declare,
        readonly, local, set, ENV or ARG, or with the next line indented deeper (`NAME=\\` then a line
        indented no deeper is a literal backslash, as in a .env file or a compose list)."""
        text = self.text
        ls = self._line_start(start)
        if _SHELL_DECL.search(text, ls, start):
            return True
        nxt = end + (2 if text.startswith("\r\n", end) else 1)
        indent = len(text[ls:start]) - len(text[ls:start].lstrip(" \t-"))
        following = _eol(text, nxt, self.n)
        return len(text[nxt:following]) - len(text[nxt:following].lstrip(" \t")) > indent

    def _continued(self, end: int):
        """The line after a trailing backslash (and the lines after it while they end with one too)."""
        text, n = self.text, self.n
        pos = end + (2 if text.startswith("\r\n", end) else 1)
        first, last = None, None
        while pos < n:
            line_end = self._eol(pos)
            s = pos
            while s < line_end and text[s] in " \t":
                s += 1
            e = _rstrip(text, s, line_end)
            if e > s:
                first = s if first is None else first
                last = e
            if e <= s or text[e - 1] != "\\":
                break
            pos = line_end + (2 if text.startswith("\r\n", line_end) else 1)
        return None if first is None else _checked("env-secret", text, first, last, False)

    def _concatenated(self, end: int):
        """The string literals of a parenthesised implicit concatenation whose `(` ends a line at `end`: every
        line up to the closing `)` holds only literals (and commas, comments); otherwise it is code (None)."""
        text, n = self.text, self.n
        pos, spans = end, []
        for _ in range(64):
            if pos >= n:
                return None
            pos += 2 if text.startswith("\r\n", pos) else 1
            line_end = self._eol(pos)
            m = _LITERAL_LINE.fullmatch(text, pos, line_end)
            if m is None:
                return None
            for lit in _LITERAL.finditer(text, pos, line_end):
                g = 1 if lit.group(1) is not None else 2
                if lit.end(g) > lit.start(g):
                    spans.append(("env-secret", *lit.span(g)))
            if m.group("close"):
                return spans or None
            pos = line_end
        return None

    def _nested(self, vs: int):
        """Every scalar value (strings, numbers) of the JSON-like object opening at vs under a secret name; the
        keys and true/false/null stay. None when it does not close within 4 KB."""
        text = self.text
        end = _object_end(text, vs, min(self.n, vs + 4096))
        if end is None:
            return None
        spans = []
        for m in _NESTED_VALUE.finditer(text, vs, end):
            s, e = m.span(1) if m.group(1) is not None else m.span(2)
            if e > s and not _kept(text[s:e], m.group(1) is not None):
                spans.append(("credential", s, e))
        return spans or None

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


# one line of a parenthesised implicit concatenation: string literals (Python prefixes), commas, a comment,
# optionally the closing `)`
_LITERAL = re.compile(r"""[rRbBuUfF]{0,2}(?:"((?:[^"\\\r\n]|\\.)*)"|'((?:[^'\\\r\n]|\\.)*)')""")
_LITERAL_LINE = re.compile(r"""[ \t]*(?:(?:[rRbBuUfF]{0,2}(?:"(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*'))"""
                           r"[ \t]*,?[ \t]*)*"
                           r"(?P<close>\)[ \t]*[,;]?)?[ \t]*(?:#[^\r\n]*)?")
# a value in a JSON-like object: a string after `:` or in a list, or a number after `:`
_NESTED_VALUE = re.compile(r"""(?<=[:\[,])\s*(?:"((?:[^"\\]|\\.)*)"(?!\s*:)|(-?\d[\w.+\-]*))""")


def _object_end(text: str, vs: int, limit: int) -> int | None:
    """End of the `{...}` object starting at vs (strings skipped), or None if it does not close before limit."""
    depth, i = 0, vs
    while i < limit:
        c = text[i]
        if c == '"':
            m = _DQ.match(text, i, limit)
            if m is None:
                return None
            i = m.end()
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


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
_DOTTED = re.compile(r"(?i)[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+")
_SIGIL_REF = re.compile(r"\$\{?[A-Za-z_]|\$\(|%[A-Za-z_]\w*%|<[\w .\-/|]*>|\{\{")


def _placeholder(val: str) -> bool:
    """_PLACEHOLDER for a value in a password position (URL userinfo, after a flag): there `a.b` is a value,
    not an attribute, and a leading `$`, `%`, `{` or `<` is a reference only when a reference follows."""
    return (_PLACEHOLDER.match(val) is not None and not _DOTTED.fullmatch(val)
            and (val[:1] not in "$%{<" or _SIGIL_REF.match(val) is not None))
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


def random_shaped(tok: str) -> bool:
    """Whether a token is shaped like random text, on its own characters alone (no context, no placeholder or
    word test): hex of 32+ digits over 3 bits a character, or two or more character classes over 3.5 bits.
    UUIDs, git SHAs (40 hex digits), lock-file and content hashes (64) are public identifiers, not credentials."""
    if _UUID.match(tok):
        return False
    if _HEX.match(tok):
        return len(tok) not in (40, 64) and len(tok) >= 32 and shannon_bits(tok) > 3.0
    classes = sum(bool(re.search(p, tok)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes >= 2 and shannon_bits(tok) > 3.5


def _high_entropy(tok: str) -> bool:
    if _PLACEHOLDER.match(tok) or (not _HEX.match(tok) and _words(tok)):
        return False
    return random_shaped(tok)


# Literal needles: a rule's regex runs only on texts containing one of them (str.find is far faster
# than a regex scan; most texts hold no candidate at all). Lower-case needles are searched in text.lower().
_NEEDLES: dict[str, tuple[str, ...]] = {
    "pem-private-key": ("PRIVATE KEY", "-----BEGIN"), "anthropic-key": ("sk-ant-",), "openai-key": ("sk-",),
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


# ---------------------------------------------------------------------------------------------------------
# Stage 4: forms of secrets that no name or key shape gives away (see "Forms found by their context" above)

_ZW_IN_NAME = re.compile(r"(?<=[A-Za-z0-9_.\-])[\u200b\u200c\u200d\u2060\ufeff]+(?=[A-Za-z0-9_.\-])")
_ZW_ANY = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")

# a shell word: quoted (the span is inside the quotes) or bare
_ARGV = r"""(?:'([^'\r\n]*)'|"((?:[^"\\\r\n]|\\.)*)"|([^\s'"]+))"""
_B64_LINE = re.compile(r"^[ \t]*(?:\d+(?:→|\t))?[ \t]*([A-Za-z0-9+/]{40,}={0,2})[ \t]*$", re.M)
_B64_TAIL = re.compile(r"[ \t]*(?:\d+(?:→|\t))?[ \t]*([A-Za-z0-9+/]{4,}={0,2})[ \t]*(?=\r?\n|$)")
_B64_WORD = re.compile(r"(?<![A-Za-z0-9+/=_\-])[A-Za-z0-9+/]{40,}={0,2}(?![A-Za-z0-9+/=_\-])")
_ARMOUR = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----[ \t]*\r?\n(?:[\w\-]+:[^\r\n]*\r?\n|[ \t]*\r?\n)*\Z")
_PEM_OPEN = re.compile(_PEM_BEGIN + r"(?=(?:\s|\\[nr])*(?:[A-Za-z0-9+/]{16}|Proc-Type:))")
_PEM_CLOSE = re.compile(_PEM_END)
_PEM_BODY_TAIL = re.compile(r"[A-Za-z0-9+/=]{4}[ \t]*(?:\r?\n|\\n|\\r\\n)?[ \t]*\Z")  # key material before END
_PPK = re.compile(r"^[ \t]*Private-Lines:[ \t]*(\d{1,4})[ \t]*\r?\n", re.M)
_PPK_MAC = re.compile(r"^[ \t]*Private-MAC:[ \t]*(\S+)", re.M)
# Patterns here start with a literal where they can (the regex engine then skips ahead to it); the context
# before the literal is checked afterwards. Lower-case patterns run over the lower-cased text.
_URL_USER = re.compile(r"://([^\s:/@'\"]{16,})@(?=[^\s/'\"@])")
# Oracle EZConnect and TNS: user/password@//host..., user/password@host:port/service
_ORACLE_HOST = re.compile(r"@(?://[\w.\-]+|[\w.\-]+:\d{1,5}/\w)")
_ORACLE_USER = re.compile(r"(?:(?<=[\s'\"=(])|^)[A-Za-z][\w$#]{0,29}/([^\s/@'\"]{3,})\Z")
_CMD_RULES: list[tuple[str, re.Pattern]] = [
    # the value after `user:` in curl's -u/--user
    ("cli-password", re.compile(r"curl\b[^\r\n]*?\s(?:-u|--user)(?:[ \t]+|=)?" + _ARGV)),
    ("cli-password", re.compile(r"sshpass\b[^\r\n]*?\s-p[ \t]*" + _ARGV)),
    ("cli-password", re.compile(r"[^\r\n]*?\b(?:docker|podman|nerdctl|buildah|skopeo|oras|helm[ \t]+registry)"
                                r"[ \t]+login\b[^\r\n]*?\s-p(?:[ \t]+|=)" + _ARGV)),
    ("cli-password", re.compile(r"-pass(?:in|out)?[ \t]+['\"]?pass:" + _ARGV)),
]
_LOGIN_P = _CMD_RULES[2][1]  # tried only from the start of a line holding " login" (see _class_spans)
_FROM_LITERAL = re.compile(r"--from-literal(?:=|[ \t]+)['\"]?([\w.\-]+)=" + _ARGV)
_HTPASSWD_PATTERN = re.compile(r"htpasswd((?:[ \t]+-[A-Za-z]+)+)[ \t]+" + _ARGV + r"[ \t]+" + _ARGV
                               + r"(?:[ \t]+" + _ARGV + ")?")
_NETRC = re.compile(r"password[ \t]+(\S+)")
_NETRC_BEFORE = re.compile(r"(?:^|[\r\n])[ \t]*\Z|\bmachine[ \t]+\S+[ \t]+login[ \t]+\S+[ \t]+\Z")
_SET_COOKIE = re.compile(r"set-cookie[\"']?[ \t]*[:=][ \t]*[\"']?([^\r\n\"']*)")
_COOKIE = re.compile(r"cookie[\"']?[ \t]*:[ \t]*[\"']?([^\r\n\"']*)")
_CURL = re.compile(r"curl\b")
_CURL_COOKIE = re.compile(r"\s(?:-b|--cookie)(?:[ \t]+|=)" + _ARGV)
_COOKIE_PAIR = re.compile(r"[ \t]*([^=;,\s]+)=([^;\r\n]*)")
_WEBHOOKS = re.compile(r"https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api/webhooks/\d+/[\w\-]{20,}"
                       r"|https://[\w\-]+\.webhook\.office\.com/webhookb2/[^\s'\"<>]+"
                       r"|https://outlook\.office(?:365)?\.com/webhook/[^\s'\"<>]+")
_PROSE_NEEDLES = ("password", "passwd", "passphrase", "passcode", "pw ", "pw:")
_PROSE = re.compile(r"p(?:assword|asswd|assphrase|asscode|w)\b"
                    r"(?:[ \t]+(?:is|was|will[ \t]+be|would[ \t]+be|should[ \t]+be)[ \t]*:?[ \t]+|[ \t]*:[ \t]*)"
                    r"(?:'([^'\r\n]{1,200})'|\"([^\"\r\n]{1,200})\"|`([^`\r\n]{1,200})`|(\S+))")
_SHELL_ECHO = re.compile(r"\b(?:bash|zsh|sh|ksh|dash|fish)(?::[ \t]*line[ \t]+\d+|:[ \t]*\d+)?:[ \t]*"
                         r"(?:command not found:[ \t]*(\S+)|(\S+?):[ \t]*(?:command )?not found)")
# a path (absolute, ~/ or ./) whose earlier components are plain names and one component is a long token
_PATH_WORD = re.compile(r"/([A-Za-z0-9_\-+=]{32,})(?=\.[A-Za-z0-9]{1,6}\b|[/\s'\"`)]|$)")
_PATH_HEAD = re.compile(r"(?:~|\.\.?)?((?:/[\w.\-]{1,64}){0,12})")
# bytes tables: 97 (`a`) for the characters of a base64 word or of a path token, 32 for any other byte
_B64_BYTES = bytes(97 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "+/") else 32 for i in range(256))
_PATH_BYTES = bytes(97 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "_-+=") else 32 for i in range(256))
# the command starts its line (after indentation or a `$`/`%`/`>` prompt): mentioned in prose or a code comment
# (`terraform output -raw DB_PASSWORD` in backquotes), the next line is not its output
_TF_OUTPUT = re.compile(r"(?m)^[ \t]*(?:[$%>][ \t]+)?terraform[ \t]+output[ \t]+(?:-(?:raw|no-color)[ \t]+)*"
                        r"([\w\-]+)[^\r\n`]*\r?\n"
                        r"(?:[ \t]*\r?\n)?([^\r\n]+)")
_TRAIL = ".,;:!?)]}>"
# Words that follow "password is", "was" or a colon in ordinary prose and code comments; anything else that follows is
# taken as the password.
_PROSE_WORDS = frozenset((
    "a an the this that these those it its is was be been being are were not no none nothing empty blank unset "
    "set reset changed change changes updated update expired expires expiring invalid valid wrong incorrect "
    "correct right required optional needed missing correct stored saved hashed encrypted encoded hidden shown "
    "masked redacted protected ok okay fine good bad weak strong too very also still now then here there "
    "in on at of for to from by with without as and or but if when where which what who how same different "
    "your my our their his her its new old current default same used given provided entered typed sent "
    "accepted rejected checked verified validated generated random secure insecure long short "
    "longer shorter simple complex known unknown correct case-sensitive sensitive stale leaked compromised "
    "only just never always often usually typically probably likely maybe defined undefined null none nil "
    "true false yes str string int number bool boolean any unknown optional bytes secret password passwords "
    "field value input prompt form box character characters letters digits chars minimum maximum min max "
    "length policy rules rule requirements requirement manager managers login auth authentication hash hashes "
    "file env environment variable variables config configuration option options argument parameter "
    "via using through inside stored read written available applied sufficient enough necessary mandatory "
    "{ } [ ] ( ) - -- * ** ... … n/a na tbd todo see below above following").split())


def _b64_runs(text: str, words: list, spans: list, decode: bool) -> None:
    """Runs of two or more lines of bare base64 (>= 40 characters, no spaces): key bodies and encoded secrets
    shown without their armour (a hard-wrapped key, a `tls.key: |` block). Runs under a public armour line
    (CERTIFICATE, PUBLIC KEY, PGP SIGNATURE...) and lines of hexadecimal (hashes) are left alone. One such
    line and a shorter last line go when, joined, they decode to a secret."""
    prev_end, run, lines = -1, [], []
    for w in words:  # the base64 words that make a whole line
        ls = max(text.rfind("\n", 0, w.start()), text.rfind("\r", 0, w.start())) + 1
        m = _B64_LINE.fullmatch(text, ls, _eol(text, w.end(), len(text)))
        if m is not None:
            lines.append(m)
    for m in lines + [None]:
        line = m.group(1) if m else ""
        ok = m is not None and not _HEX.match(line) and shannon_bits(line) > 4.0 and sum(
            bool(re.search(p, line)) for p in ("[a-z]", "[A-Z]", "[0-9]")) >= 2
        joined = ok and run and text[prev_end:m.start()] in ("\n", "\r\n")
        if ok and (joined or not run):
            run.append(m)
            prev_end = m.end()
            continue
        if run:
            e = run[-1].end(1)
            nl = run[-1].end()
            nl += 2 if text.startswith("\r\n", nl) else 1 if text.startswith("\n", nl) else len(text)
            tail = _B64_TAIL.match(text, nl) if nl <= len(text) else None
            if tail is not None:  # the last, shorter line of a wrapped block
                e = tail.end(1)
            if len(run) >= 2:
                armour = _ARMOUR.search(text[max(0, run[0].start() - 400):run[0].start()])
                if armour is None or "PRIVATE" in armour.group(1):
                    spans.append(("base64-secret", run[0].start(1), e))
            elif tail is not None and decode and _decodes_to_secret(run[0].group(1) + tail.group(1)):
                spans.append(("base64-secret", run[0].start(1), e))
        run = [m] if ok else []
        prev_end = m.end() if ok else -1


_INNER: list = []
_BARE = re.compile(r"\s*([A-Za-z0-9_\-+/=.]{24,})\s*")


def _random_token(tok: str) -> bool:
    """A long token that reads as random: upper, lower and digits, many distinct characters, > 3.9 bits each."""
    return (len(set(tok)) > 14 and shannon_bits(tok) > 3.9 and _high_entropy(tok)
            and all(re.search(p, tok) for p in ("[a-z]", "[A-Z]", "[0-9]")))


def _line_start(text: str, i: int) -> int:
    return max(text.rfind("\n", 0, i), text.rfind("\r", 0, i)) + 1


def _same(rx: re.Pattern) -> re.Pattern:
    return rx


@functools.lru_cache(maxsize=None)
def _ignoring_case(rx: re.Pattern) -> re.Pattern:
    return re.compile(rx.pattern, re.I)
# rules whose span may hold markers of earlier stages (a key body runs over whatever it covers)
_POSITIONAL_RULES = frozenset(("connection-password", "cli-password"))  # values in a password position
_WHOLE_RULES = frozenset(("pem-private-key", "ppk-private-key", "base64-secret", "webhook-url"))


def _decodes_to_secret(tok: str) -> bool:
    """Whether base64 `tok` decodes to text (UTF-8, printable) that redaction would change."""
    if len(tok) > 65536:
        return False
    try:
        raw = base64.b64decode(tok + "=" * (-len(tok) % 4), validate=True)
        plain = raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    if len(plain) < 8 or sum(c.isprintable() or c in "\r\n\t" for c in plain) < 0.95 * len(plain):
        return False
    if not _INNER:
        _INNER.append(Redactor(decode=False))
    return _INNER[0](plain) != plain


def _word_value(v: str) -> bool:
    """Whether the word after a password phrase is ordinary prose or code rather than a password."""
    w = v.strip(_TRAIL + "'\"`").lower()
    return (len(w) < 3 or not any(c.isalnum() for c in w) or w in _PROSE_WORDS or _is_type(v.rstrip(_TRAIL))
            or _kept(v.rstrip(_TRAIL), False) or _placeholder(v.strip("'\"`")) or _placeholder(w)
            or _MARKER.search(v) is not None
            or ("(" in v and _CODE.fullmatch(v.rstrip(_TRAIL)) is not None)  # `z.string()`, not `Ab3.x9`
            or (_IDENT.fullmatch(v.rstrip(_TRAIL)) is not None and _mentions_marker(w)
                and ("_" in v or re.search("[a-z][A-Z]", v) is not None)))


def _argv_span(m: re.Match, first: int) -> tuple[int, int]:
    """The span of the shell word captured by the three groups of _ARGV starting at group `first`."""
    for g in (first, first + 1, first + 2):
        if m.group(g) is not None:
            return m.span(g)
    return m.end(), m.end()


def _cookie_values(text: str, s: int, e: int, spans: list) -> None:
    for p in _COOKIE_PAIR.finditer(text, s, e):
        a, b = p.span(2)
        while b > a and text[b - 1] in " \t":
            b -= 1
        if b > a:
            spans.append(("cookie", a, b))


def _class_spans(text: str, decode: bool) -> list[tuple[str, int, int]]:
    """(rule, start, end) of every stage-4 secret in `text`; spans may overlap (the caller keeps the first)."""
    spans: list[tuple[str, int, int]] = []
    low = text.lower()
    # case-insensitive patterns run over the lower-cased text when lowering keeps the offsets, else as (?i)
    lower, ci = (low, _same) if len(low) == len(text) else (text, _ignoring_case)
    if "---" in text and ("begin" in low or "end" in low):  # five dashes, or three or more of a wrapped five
        m = _PEM_OPEN.search(text)
        if m is not None:  # BEGIN without END (a whole key would be a marker by now): to the end of the text
            spans.append(("pem-private-key", m.start(), len(text)))
        m = next((c for c in _PEM_CLOSE.finditer(text)
                  if _PEM_BODY_TAIL.search(text, max(0, c.start() - 16), c.start())), None)
        if m is not None:  # END without BEGIN: a key continued from an earlier text, from the start
            last = text.rfind("]", 0, m.start())
            start = last + 1 if last >= 0 and _MARKER.search(text, max(0, last - 60), last + 1) else 0
            spans.append(("pem-private-key", start, m.end()))
    if "private-lines:" in low:
        for m in _PPK.finditer(text):
            e = m.end()
            for i in range(int(m.group(1))):
                if i:
                    e += 2 if text.startswith("\r\n", e) else 1
                e = _eol(text, min(e, len(text)), len(text))
            spans.append(("ppk-private-key", m.end(), e))
        spans += [("ppk-private-key", *m.span(1)) for m in _PPK_MAC.finditer(text)]
    raw = text.encode("utf-8", "surrogatepass")
    # a bytes translation finds whether any long run exists ~6x faster than a regex scan; most texts have none
    words = list(_B64_WORD.finditer(text)) if b"a" * 40 in raw.translate(_B64_BYTES) else []
    _b64_runs(text, words, spans, decode)
    if decode:
        for m in words:
            if not text.endswith("base64,", 0, m.start()) and _decodes_to_secret(m.group(0)):
                e = m.end()
                while text.startswith("\n", e) or text.startswith("\r\n", e):  # the rest of a wrapped block
                    tail = _B64_TAIL.match(text, e + (1 if text[e] == "\n" else 2))
                    if tail is None:
                        break
                    e = tail.end(1)
                spans.append(("base64-secret", m.start(), e))
    if "://" in text:
        for m in _URL_USER.finditer(text):
            if _high_entropy(m.group(1)):
                spans.append(("url-token", *m.span(1)))
    if "@" in text and "/" in text:
        for m in _ORACLE_HOST.finditer(text):
            u = _ORACLE_USER.search(text, max(0, m.start() - 100), m.start())
            if u is not None:
                spans.append(("connection-password", *u.span(1)))
    if "curl" in low or "sshpass" in low or "login" in low or "-pass" in low:
        for rule, rx in _CMD_RULES:
            if rx is _LOGIN_P:
                if " login" not in text:
                    continue
                found = [m for ln in re.finditer(" login", text)
                         for m in [rx.match(text, max(0, ln.start() - 40, _line_start(text, ln.start())))] if m]
            else:
                found = rx.finditer(text)
            for m in found:
                s, e = _argv_span(m, 1)
                if rx is _CMD_RULES[0][1]:  # curl -u: only what follows the first colon
                    c = text.find(":", s, e)
                    if c < 0:
                        continue
                    s = c + 1
                if e > s:
                    spans.append((rule, s, e))
    if "--from-literal" in low:
        for m in _FROM_LITERAL.finditer(text):
            if secret_name(m.group(1)):
                spans.append(("cli-secret", *_argv_span(m, 2)))
    if "htpasswd" in low:
        for m in _HTPASSWD_PATTERN.finditer(text):
            flags = m.group(1)
            if "b" in flags:
                g = 5 if "n" in flags else 8
                if m.group(g) is not None or m.group(g + 1) is not None or m.group(g + 2) is not None:
                    spans.append(("cli-password", *_argv_span(m, g)))
    if "password " in text or "password\t" in text:
        for m in _NETRC.finditer(text):
            if _NETRC_BEFORE.search(text, max(0, m.start() - 200), m.start()) and not _word_value(m.group(1)):
                spans.append(("netrc-password", *m.span(1)))
    if "cookie" in low:
        for rx in (_SET_COOKIE, _COOKIE):
            for m in ci(rx).finditer(lower):
                s, e = m.span(1)
                if rx is _COOKIE and m.start() and (lower[m.start() - 1].isalnum() or lower[m.start() - 1] in "_-"):
                    continue  # set-cookie, or a longer word
                if rx is _SET_COOKIE:  # NAME=VALUE; attributes: only the first pair is the cookie
                    semi = text.find(";", s, e)
                    e = e if semi < 0 else semi
                _cookie_values(text, s, e, spans)
    if "curl" in low:
        for c in _CURL.finditer(text):
            for m in _CURL_COOKIE.finditer(text, c.end(), _eol(text, c.end(), len(text))):
                s, e = _argv_span(m, 1)
                if "=" in text[s:e]:  # without `=` it names a cookie jar file
                    _cookie_values(text, s, e, spans)
    if "webhook" in low:
        spans += [("webhook-url", *m.span()) for m in _WEBHOOKS.finditer(text)]
    if any(n in low for n in _PROSE_NEEDLES):
        for m in ci(_PROSE).finditer(lower):
            if m.start() and (lower[m.start() - 1].isalnum() or lower[m.start() - 1] == "_"):
                continue  # inside a longer word
            g = next(i for i in (1, 2, 3, 4) if m.group(i) is not None)
            s, e = m.span(g)
            if g == 4:
                while e > s and text[e - 1] in _TRAIL:
                    e -= 1
            if e > s and not _word_value(text[s:e]) and not _word_value(m.group(g)):
                spans.append(("prose-password", s, e))
    if "not found" in low:
        found = [m for nf in re.finditer("not found", text)
                 for m in [_SHELL_ECHO.search(text, _line_start(text, nf.start()), _eol(text, nf.start(), len(text)))]
                 if m]
        for m in found:
            g = 1 if m.group(1) is not None else 2
            if _high_entropy(m.group(g).strip(_TRAIL)):
                spans.append(("shell-echo", *m.span(g)))
    if "/" in text and b"a" * 32 in raw.translate(_PATH_BYTES):
        for m in _PATH_WORD.finditer(text):
            if not _random_token(m.group(1)):
                continue
            j = m.start()
            while j > 0 and m.start() - j < 800 and (text[j - 1].isalnum() or text[j - 1] in "_.-/~"):
                j -= 1
            head = _PATH_HEAD.fullmatch(text, j, m.start())
            if head is not None and text[j - 1:j] not in ("+", "=") and _words(head.group(1) or "x"):
                spans.append(("path-secret", *m.span(1)))
    if 24 <= len(text) <= 256:
        m = _BARE.fullmatch(text)
        if m is not None and _random_token(m.group(1)):  # a secret pasted alone (as a command, into a prompt)
            spans.append(("bare-secret", *m.span(1)))
    if "terraform" in low:
        for m in _TF_OUTPUT.finditer(text):
            if secret_name(m.group(1)):
                s, e = m.span(2)
                spans.append(("terraform-output", s, _rstrip(text, s, e)))
    return spans


# commands whose whole output is a secret: `terraform output -raw NAME`, `printenv NAME`, `echo $NAME` (NAME a
# secret name); a tool result is a separate text from its command, so the caller asks (see printed_secret)
_PRINTS = re.compile(r"\s*(?:terraform[ \t]+output(?:[ \t]+-(?:raw|json|no-color))*|printenv|echo[ \t]+(?:-n[ \t]+)?\"?\$\{?)"
                     r"[ \t]*([A-Za-z_][\w\-]*)\}?\"?\s*")


def prints_secret(command: str) -> bool:
    """Whether a shell command's whole output is the value of a secret (terraform output, printenv or echo of
    a secret name), so that a tool result holding that output is redacted whole (see Redactor.printed_secret)."""
    m = _PRINTS.fullmatch(command) if len(command) <= 300 else None
    return m is not None and secret_name(m.group(1))


@dataclass
class Redactor:
    """Callable that redacts a string and counts replacements per rule."""

    entropy: bool = True
    counts: Counter = field(default_factory=Counter)
    decode: bool = True  # decode base64 candidates (off inside the check of a decoded text: one level only)

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
        if _ZW_ANY.search(text):
            text = _ZW_IN_NAME.sub("", text)  # a zero-width character can only hide a name there
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
        new = self._classes(text)
        if new is not text:
            text, lower = new, new.lower()
        if self.entropy and _present("high-entropy", text, lower, memo):
            text = self._sub(_CANDIDATE, 1, "high-entropy", text, check=True, entropy=True,
                             low=(self._candidate_low, lower))
        return text

    def printed_secret(self, command: str, output: str) -> str:
        """The redacted output of a shell command: all of it (one marker) when `prints_secret(command)`."""
        if output.strip() and prints_secret(command):
            self.counts["printed-secret"] += 1
            return MARK.format("printed-secret")
        return self(output)

    def _classes(self, text: str) -> str:
        """Stage 4: overlapping spans are merged (the first rule names the marker)."""
        spans = []
        for rule, s, e in _class_spans(text, self.decode):
            val = text[s:e]
            if e <= s or (rule not in _WHOLE_RULES and (_placeholder(val) or _MARKER.search(val))):
                continue
            if rule.startswith("cli-") and not any(c.isalnum() for c in val):  # `-p,` in prose
                continue
            spans.append((s, -e, rule))
        if not spans:
            return text
        spans.sort()
        out, pos = [], 0
        for s, neg_e, rule in spans:
            e = -neg_e
            if e <= pos:
                continue
            if s < pos:  # overlaps the previous marker: the marker covers both
                pos = e
                continue
            self.counts[rule] += 1
            out += [text[pos:s], MARK.format(rule)]
            pos = e
        return "".join(out) + text[pos:]

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
            if check and ((_placeholder(val) if name in _POSITIONAL_RULES else _PLACEHOLDER.match(val))
                          or _MARKER.search(val)):
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
