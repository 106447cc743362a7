"""Property tests of the assignment rule (ingest/redact.py): a value assigned to a secret name goes entirely,
whatever its characters, in every supported form, as plain text and inside JSON-encoded tool output; the
ordinary assignments next to it stay verbatim.

Leak criterion: the redacted text, with its `[REDACTED:...]` markers removed, contains no window of the value
(windows of 4 characters, or the whole value if shorter), neither as written nor as encoded in its context,
that the same text without the value does not already contain. A partial redaction (a kept head or tail of
at least 4 characters) fails it.

Values are drawn from the printable ASCII characters (with tab). Only the shapes that the module docstring
documents as kept are left out, by name: an unquoted null word (None, null, nil, undefined), a lone `{`, `[`
or `(` (a block opener), a YAML block indicator (`|`, `>-`, ...), a reference or placeholder that mentions a
marker word, unquoted code that mentions one (`cfg.api_key`), and values that a context cannot hold unquoted
(leading or trailing blanks, a leading quote, a leading `-` after a space-separated flag).
"""

from __future__ import annotations

import json
import os
import re
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ingest.redact import Redactor, secret_name

PRINTABLE = "".join(c for c in string.printable if c not in "\n\r\x0b\x0c")
MARKER = re.compile(r"\[REDACTED:[A-Za-z0-9_.\-]+\]")
NULL_WORDS = {"None", "null", "nil", "undefined"}
BLOCK = re.compile(r"[|>][-+]?\d?")
# REDACT_PROPERTY_EXAMPLES=2000 searches harder (the default keeps this file under 30 s).
SETTINGS = settings(max_examples=int(os.environ.get("REDACT_PROPERTY_EXAMPLES", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Name parts: realistic prefixes and suffixes plus random words; the marker word in any case and separator.
MARKERS = ["pass", "passwd", "password", "secret", "token", "key", "credential", "credentials", "auth", "private_key",
           "api_key", "pwd", "dsn", "passphrase", "auth_token", "client_secret", "access_token", "secret_key"]
PREFIXES = ["smtp", "db", "app", "aws", "stripe", "github", "my", "x", "next_auth", "mysql_root", "redis", "jwt",
            "postgres", "sentry", "openai", "django", "rails"]
SUFFIXES = ["prod", "2", "v2", "ro", "value", "b64", "live", "old"]


@st.composite
def secret_names(draw) -> str:
    random_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
    words = draw(st.lists(st.one_of(st.sampled_from(PREFIXES), random_word), max_size=2))
    words.append(draw(st.sampled_from(MARKERS)))
    words += draw(st.lists(st.sampled_from(SUFFIXES), max_size=1))
    words = [p for w in words for p in w.split("_")]
    style = draw(st.sampled_from(["upper", "lower", "camel", "mixed"]))
    sep = draw(st.sampled_from(["_", "-", ".", ""]))
    if style == "camel":
        name = words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
    elif style == "mixed":
        name = sep.join(draw(st.sampled_from([w.upper(), w.lower(), w.title()])) for w in words)
    else:
        name = (sep or "_").join(w.upper() if style == "upper" else w for w in words)
    assume(secret_name(name))
    return name


values = st.text(PRINTABLE, min_size=1, max_size=40)


MARKER_WORD = re.compile(r"(?i)pass|pwd|secret|token|key|cred|auth|private|dsn")
# The documented references and placeholders ($API_KEY, ${...}, %KEY%, <your-key>, `Bearer token`) and, unquoted,
# code made of names, calls and subscripts (cfg.api_key): kept when they mention a marker word.
REFERENCE_LIKE = re.compile(r"(?i)[$%<{].*|(?:bearer|basic|token|digest)[ \t].*")
CODE_LIKE = re.compile(r"[\w$.()\[\],;=:/ '\"-]*")


def _names_a_secret(v: str, quoted: bool) -> bool:
    return MARKER_WORD.search(v) is not None and (REFERENCE_LIKE.fullmatch(v.strip()) is not None
                                                  or (not quoted and CODE_LIKE.fullmatch(v) is not None))


def _unquoted(v: str) -> bool:
    return (v == v.strip(" \t") and v != "" and v[0] not in "\"'" and v not in NULL_WORDS
            and v not in ("{", "[", "(") and not BLOCK.fullmatch(v) and not _names_a_secret(v, False))


def _dq_shell(v: str) -> str:
    return '"' + re.sub(r'([\\"$`])', r"\\\1", v) + '"'


def _sq_shell(v: str) -> str:
    return "'" + v.replace("'", "'\\''") + "'"


# Each context: (name, value) -> (lines with S where the value is written, the value as written, lines that
# must stay verbatim), or None when the context cannot hold the value.
S = "\x00"
def ctx_env(n, v):
    if not _unquoted(v):
        return None
    lines = ["# .env", "DEBUG=true", f"{n}={S}", "PORT=8080", "MAX_TOKENS=1024"]
    return lines, v, ["DEBUG=true", "PORT=8080", "MAX_TOKENS=1024"]


def ctx_env_dq(n, v):
    enc = json.dumps(v)
    return ["DEBUG=true", f"{n}={S}", "PORT=8080"], enc, ["DEBUG=true", "PORT=8080"]


def ctx_export_sq(n, v):
    enc = _sq_shell(v)
    return ["export DEBUG=true", f"export {n}={S}", "export PORT=8080"], enc, ["export DEBUG=true", "export PORT=8080"]


def ctx_export_dq(n, v):
    enc = _dq_shell(v)
    return ["export DEBUG=true", f"export {n}={S}", "export PORT=8080"], enc, ["export DEBUG=true", "export PORT=8080"]


def ctx_yaml(n, v):
    if not _unquoted(v):
        return None
    return (["database:", "  host: localhost", f"  {n}: {S}", "  port: 5432"], v, ["  host: localhost", "  port: 5432"])


def ctx_yaml_dq(n, v):
    enc = json.dumps(v)
    return ["database:", "  host: localhost", f"  {n}: {S}", "  port: 5432"], enc, ["  host: localhost", "  port: 5432"]


def ctx_yaml_sq(n, v):
    enc = "'" + v.replace("'", "''") + "'"
    return ["database:", "  host: localhost", f"  {n}: {S}", "  port: 5432"], enc, ["  host: localhost", "  port: 5432"]


def ctx_toml(n, v):
    enc = json.dumps(v)
    return ["[server]", 'host = "0.0.0.0"', f"{n} = {S}", "port = 8080"], enc, ['host = "0.0.0.0"', "port = 8080"]


def ctx_toml_literal(n, v):
    if "'" in v:
        return None
    return ["[server]", 'host = "0.0.0.0"', f"{n} = {S}", "port = 8080"], f"'{v}'", ['host = "0.0.0.0"', "port = 8080"]


def ctx_ini(n, v):
    if not _unquoted(v):
        return None
    keep = ["server = smtp.example.com", "port = 587"]
    return ["[mail]", keep[0], f"{n} = {S}", keep[1]], v, keep


def ctx_json(n, v):
    line = '{"debug": true, ' + json.dumps(n) + f": {S}, " + '"port": 8080}'
    return [line], json.dumps(v), ['"debug": true', '"port": 8080']


def ctx_json_pretty(n, v):
    lines = ["{", '  "debug": true,', "  " + json.dumps(n) + f": {S},", '  "port": 8080', "}"]
    return lines, json.dumps(v), ['  "debug": true,', '  "port": 8080']


def ctx_compose_list(n, v):
    if not _unquoted(v):
        return None
    lines = ["services:", "  db:", "    environment:", "      - DEBUG=true", f"      - {n}={S}", "      - PORT=8080"]
    return lines, v, ["      - DEBUG=true", "      - PORT=8080"]


def ctx_compose_map(n, v):
    if not _unquoted(v):
        return None
    lines = ["services:", "  db:", "    environment:", '      DEBUG: "true"', f"      {n}: {S}", "      PORT: 8080"]
    return lines, v, ['      DEBUG: "true"', "      PORT: 8080"]


def ctx_flag_space(n, v):
    if not v or any(c in v for c in " \t\"'\\") or v.startswith("-"):
        return None
    return ["DEBUG=true", f"tool login --{n} {S} --verbose", "PORT=8080"], v, ["DEBUG=true", "PORT=8080"]


def ctx_flag_eq(n, v):
    if not v or any(c in v for c in " \t\"'\\"):
        return None
    return ["DEBUG=true", f"tool login --{n}={S} --verbose", "PORT=8080"], v, ["DEBUG=true", "PORT=8080"]


def ctx_flag_quoted(n, v):
    enc = _dq_shell(v)
    return ["DEBUG=true", f"tool login --{n} {S} --verbose", "PORT=8080"], enc, ["DEBUG=true", "PORT=8080"]


CONTEXTS = [ctx_env, ctx_env_dq, ctx_export_sq, ctx_export_dq, ctx_yaml, ctx_yaml_dq, ctx_yaml_sq, ctx_toml,
            ctx_toml_literal, ctx_ini, ctx_json, ctx_json_pretty, ctx_compose_list, ctx_compose_map, ctx_flag_space,
            ctx_flag_eq, ctx_flag_quoted]


def _windows(s: str) -> set[str]:
    k = min(4, len(s))
    return {s[i:i + k] for i in range(len(s) - k + 1)}


def _check(ctx, name: str, value: str, embed: bool) -> None:
    got = ctx(name, value)
    assume(got is not None and not _names_a_secret(value, True))
    lines, written, keep = got
    template = "\n".join(lines)
    assert template.count(S) == 1
    empty = ctx(name, "")  # the text around an empty value keeps the delimiters a redacted value keeps
    text, skeleton = template.replace(S, written), template.replace(S, empty[1] if empty else "")
    if embed:  # the file as a tool result inside a JSON-encoded transcript record
        record = json.dumps({"type": "tool_result", "tool_use_id": "toolu_01", "content": text})
        out_record = Redactor()(record)
        out = json.loads(out_record)["content"]  # the redacted record is still valid JSON
    else:
        out = Redactor()(text)
    assert MARKER.search(out), out
    bare = MARKER.sub("", out)
    # (windows made only of quotes, blanks and backslashes are the delimiters a quoted value keeps)
    leaked = sorted(w for w in _windows(value) | _windows(written)
                    if w in bare and w not in skeleton and w.strip("\"' \t\\"))
    assert not leaked, (leaked, text, out)
    out_lines = out.split("\n")
    for line in keep:
        assert any(line in o for o in out_lines), (line, out)


@pytest.mark.parametrize("embed", [False, True], ids=["plain", "json"])
@pytest.mark.parametrize("ctx", CONTEXTS, ids=[c.__name__[4:] for c in CONTEXTS])
@SETTINGS
@given(name=secret_names(), value=values)
@example(name="SECRET_KEY", value="8f#kL!2@x%^*Qz").via("the issue: # and !@%^* in the value")
@example(name="SMTP_PASS", value="hunter#2!pass word").via("the issue")
@example(name="AUTH_SECRET", value="a b#c'd\"e\\f").via("quotes and backslashes")
@example(name="DB_PASSWORD", value="123456").via("a numeric PIN is a secret")
@example(name="SMTP_PASS", value="\\r{NT+'`p/[%$)0{GO").via("a literal backslash-r first (benchmarks/redaction.py)")
@example(name="api_key", value="true").via("a boolean-looking value is a secret")
@example(name="PASS", value="A.KEY").via("inside quotes a name chain is a string, not code (CI)")
def test_secret_value_entirely_gone(ctx, embed, name, value):
    _check(ctx, name, value, embed)


@pytest.mark.parametrize("name", [
    "SECRET_KEY", "SMTP_PASS", "AUTH_SECRET", "DB_PASSWORD", "POSTGRES_PASSWORD", "smtpPass", "smtp-pass",
    "db.password",
    "spring.datasource.password", "GITHUB_TOKEN", "apiKey", "api_key", "x-api-key", "Authorization", "client_secret",
    "private_key_id", "AWS_SECRET_ACCESS_KEY", "_authToken", "SENTRY_DSN", "DB_PWD", "passphrase", "API_KEY_PROD",
    "GITHUB_TOKEN_2", "SECRET_KEY_BASE", "GOOGLE_APPLICATION_CREDENTIALS", "token", "password", "PASS", "creds",
    "MYSQL_ROOT_PASSWORD", "NEXTAUTH_SECRET", "oauth", "API_KEYS", "privateKey", "dbpassword", "AUTH",
])
def test_secret_names(name):
    assert secret_name(name)


@pytest.mark.parametrize("name", [
    "max_tokens", "output_tokens", "cache_read_input_tokens", "N_TOKENS", "token_count", "per_token", "tokenizer",
    "steps_per_base_token", "last_by_key", "key", "_KEY", "private", "is_private", "PWD", "OLDPWD", "author",
    "Co-Authored-By", "authenticated", "authDomain", "key_insights", "PASSWORD_FILE", "secretName",
    "PASSWORD_MIN_LENGTH",
    "AUTH_ENABLED", "pad_token_id", "eos_token", "PUBLIC_KEY", "NEXT_PUBLIC_API_KEY", "bypass", "compass", "passenger",
    "keyboard", "monkey", "AWS_ACCESS_KEY_ID", "token_url", "ffn_key", "att.key.weight", "next_page_token", "DEBUG",
])
def test_ordinary_names(name):
    assert not secret_name(name)


@pytest.mark.parametrize("text", [
    "API_KEY=${API_KEY}", "export GITHUB_TOKEN=$GITHUB_TOKEN", "token: ${{ secrets.GITHUB_TOKEN }}",
    "password: <your-password-here>", "token = os.environ['GITHUB_TOKEN']", "self.api_key = cfg.api_key",
    "const apiKey = process.env.API_KEY;", "password: null", "api_key: str | None = None",
    "    token?: string;", "curl -H 'Authorization: Bearer $TOKEN' https://example.com",
    "SECRET_KEY=[REDACTED:env-secret]", "    token = sample(logits, now, rows, carry.pen)",
    "        refresh_token: refreshTokenValue,", "max_tokens=1024", '{"output_tokens": 599, "input_tokens": 8}',
    "            self._canary_key = key", "        token = inverse_cdf(q, self.sampler.uniform())",
    "    carry = dataclasses.replace(carry, token=jnp.where(host_B, feed_B, carry.token))",
])
def test_values_that_name_a_secret_are_kept(text):
    assert Redactor()(text) == text


@pytest.mark.parametrize("text, gone", [
    ('SECRET_KEY = os.getenv("SECRET_KEY", "dev#insecure!key")', "dev#insecure!key"),
    ("password: hunter2  # rotate", "hunter2  # rotate"),
    ("auth: {user: admin, pass: pw#1}", "pw#1"),
    ("private_key: |\n  line-one-of-the-key\n  line-two-of-the-key\nport: 1", "line-"),
    ('PRIVATE_KEY="first line\nsecond line#x"\nPORT=1', "second line#x"),
    ("TOKEN=abc#1 ./run.sh --fast", "abc#1"),
    ("curl 'https://api.example.com/?user=me&api_key=k#1!x&page=2'", "k#1!x"),
    ('echo "PASSWORD=p w#1" >> .env', "p w#1"),
    ("DB_PASSWORD='a'\\''b#c' psql", "b#c"),
    ('  PASS: "A.KEY"', "A.KEY"),
    ("self.api_key = 'k#1!x'", "k#1!x"),
    ('f(token=abc("k#1!x") y)', "k#1!x"),
    ('token = f("k#1!x", g())', "k#1!x"),
])
def test_other_forms(text, gone):
    out = Redactor()(text)
    assert gone not in out and "[REDACTED:" in out, out
