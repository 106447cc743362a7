"""Secret classes that no name or key shape gives away (ingest/redact.py, stage 4 and the assignment forms of
issue 25 item 3): a random secret of each class, in varied contexts, never survives redaction; and a planted
Claude Code session holding one secret of each class yields training text (`traces`, through the Python and
the ccsniff readers) with no piece of any secret in it.

Secrets are random (drawn from a seeded generator that hypothesis picks) rather than adversarial strings: each
rule recognises its class by context plus the shape of a real secret of that class (a random password, token,
key body). Leak criterion: no 8-character window of the secret (the whole secret if shorter) is left in the
redacted text. Fake secrets and armour lines are assembled at run time so this file holds nothing a secret
scanner flags.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.redact import Redactor, prints_secret
from ingest.render import RenderOptions
from ingest.stream import collect
from ingest.traces import traces_command

SETTINGS = settings(max_examples=int(os.environ.get("REDACT_PROPERTY_EXAMPLES", "30")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
B62 = string.ascii_letters + string.digits
B64 = B62 + "+/"
PUNCT = "!%^*_-.~"
SEEDS = st.integers(0, 2 ** 32 - 1)
DASH5 = "-" * 5


def armour(word: str, kind: str) -> str:
    return f"{DASH5}{word} {kind + ' ' if kind else ''}PRIV" + f"ATE KEY{DASH5}"


def token(rng: random.Random, n: int, alphabet: str = B62) -> str:
    """A random token holding a lower-case letter, an upper-case letter and a digit when its alphabet has them
    (as real keys do)."""
    need = [f for f in (str.islower, str.isupper, str.isdigit) if any(f(c) for c in alphabet)]
    while True:
        t = "".join(rng.choice(alphabet) for _ in range(n))
        if all(any(f(c) for c in t) for f in need):
            return t


def password(rng: random.Random, lo: int = 10, hi: int = 20, extra: str = PUNCT) -> str:
    # a leading `$NAME` or `%NAME%` reads as a reference, which the rules keep by design (module docstring)
    return token(rng, rng.randint(lo, hi), B62 + extra).lstrip("$%")


def leaked(secret: str, out: str) -> list[str]:
    k = min(8, len(secret))
    return [secret[i:i + k] for i in range(len(secret) - k + 1) if secret[i:i + k] in out]


def check(texts: list[str], secrets: list[str]) -> None:
    red = Redactor()
    outs = [red(t) for t in texts]
    for s in secrets:
        for t, out in zip(texts, outs):
            assert not leaked(s, out), (s, t, out)
        assert "[REDACTED:" in "".join(outs)


PROSE = ["Here is what I found.", "Let me check that.", "ok", "Run the tests again please.", ""]


def key_body(rng: random.Random, lines: int = 8, width: int = 64) -> str:
    return "\n".join("".join(rng.choice(B64) for _ in range(width)) for _ in range(lines))


# ---------------------------------------------------------------------------------------------------------
# PEM and PuTTY private keys

@SETTINGS
@given(SEEDS, st.sampled_from(["RSA", "EC", "OPENSSH", "ENCRYPTED", "DSA", ""]), st.floats(0.05, 0.95),
       st.sampled_from(PROSE), st.sampled_from(PROSE))
def test_pem_key_split_across_two_texts(seed, kind, cut, before, after):
    rng = random.Random(seed)
    body = key_body(rng)
    key = f"{armour('BEGIN', kind)}\n{body}\n{armour('END', kind)}"
    lo, hi = len(armour("BEGIN", kind)) + 1, len(key) - len(armour("END", kind)) - 1
    at = lo + int(cut * (hi - lo))
    # the first tool result stops inside the key (no END), the second continues it (no BEGIN)
    check([f"{before}\n$ cat ~/.ssh/id\n{key[:at]}", f"{key[at:]}\n{after}"], body.split("\n"))


@SETTINGS
@given(SEEDS, st.sampled_from(["RSA", "OPENSSH", ""]), st.sampled_from([40, 50, 60, 64, 76]), st.booleans())
def test_pem_key_hard_wrapped(seed, kind, width, armoured):
    rng = random.Random(seed)
    body = key_body(rng, 6).replace("\n", "")
    one = f"{armour('BEGIN', kind)}{body}{armour('END', kind)}" if armoured else body
    folded = "\n".join(one[i:i + width] for i in range(0, len(one), width))
    check([f"$ echo \"$KEY\" | fold -w {width}\n{folded}\n$ ls"], [body[i:i + 40] for i in range(0, len(body), 40)])


@SETTINGS
@given(SEEDS, st.sampled_from(["RSA", "EC", ""]), st.sampled_from(["kubeconfig", "tls", "echo"]))
def test_base64_of_a_pem_key(seed, kind, form):
    rng = random.Random(seed)
    pem = f"{armour('BEGIN', kind)}\n{key_body(rng, 4)}\n{armour('END', kind)}\n"
    enc = base64.b64encode(pem.encode()).decode()
    if form == "kubeconfig":
        text = f"users:\n- name: admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: {enc}\n"
    elif form == "tls":
        lines = "\n".join("    " + enc[i:i + 76] for i in range(0, len(enc), 76))
        text = f"apiVersion: v1\nkind: Secret\ndata:\n  tls.key: |\n{lines}\ntype: kubernetes.io/tls"
    else:
        text = f"$ echo {enc} | base64 -d > key.pem"
    check([text], [enc[i:i + 60] for i in range(0, len(enc), 60)])


@SETTINGS
@given(SEEDS, st.sampled_from(["DB_PASSWORD", "API_KEY", "STRIPE_SECRET", "auth_token"]), st.booleans())
def test_base64_of_an_env_file(seed, name, wrapped):
    rng = random.Random(seed)
    secret = password(rng, 16, 24, "")
    enc = base64.b64encode(f"DEBUG=1\n{name}={secret}\nPORT=8080\n".encode()).decode()
    shown = "\n".join(enc[i:i + 40] for i in range(0, len(enc), 40)) if wrapped else enc
    check([f"$ base64 .env\n{shown}\n$ echo done", f'{{"data": {{".env": "{enc}"}}}}'], [enc])


@SETTINGS
@given(SEEDS, st.integers(1, 14))
def test_putty_private_lines(seed, n):
    rng = random.Random(seed)
    public = key_body(rng, 2)
    private = key_body(rng, n).split("\n")
    private[-1] = private[-1][:rng.randint(12, 64)]
    mac = "".join(rng.choice("0123456789abcdef") for _ in range(64))
    ppk = (f"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: me@laptop\nPublic-Lines: 2\n{public}\n"
           f"Private-Lines: {n}\n" + "\n".join(private) + f"\nPrivate-MAC: {mac}\n")
    check([ppk], private + [mac])


# ---------------------------------------------------------------------------------------------------------
# URL authorities

@SETTINGS
@given(SEEDS, st.sampled_from(["redis", "postgres", "mysql", "amqp", "mongodb+srv", "https"]),
       st.sampled_from(["empty-user", "at-in-password", "plain"]), st.sampled_from(["", "DATABASE_URL is ", "see "]))
def test_url_userinfo(seed, scheme, form, before):
    rng = random.Random(seed)
    pw = password(rng, 10, 20, "!$*-_.~")
    if form == "at-in-password":
        cut = rng.randint(3, len(pw) - 3)
        pw = pw[:cut] + "@" + pw[cut:]
    user = "" if form == "empty-user" else "app"
    check([f"{before}{scheme}://{user}:{pw}@db.internal:5432/app?ssl=true"], [pw])


@SETTINGS
@given(SEEDS, st.sampled_from(["https://{t}@github.com/org/repo.git", "git clone https://{t}@gitlab.com/g/p",
                               "pip install git+https://{t}@github.com/org/pkg.git"]))
def test_token_as_url_user(seed, form):
    rng = random.Random(seed)
    t = token(rng, rng.randint(24, 48))
    check([form.format(t=t)], [t])


@SETTINGS
@given(SEEDS, st.sampled_from(["sqlplus scott/{p}@//db.example.com:1521/ORCL",
                               "conn = cx_Oracle.connect('app/{p}@dbhost:1521/XEPDB1')",
                               "ORACLE_CONN=hr/{p}@//10.0.0.5/pdb1"]))
def test_oracle_connect_strings(seed, form):
    rng = random.Random(seed)
    p = password(rng, 8, 16, "!$#_").lstrip("$")  # `$NAME` would be a shell variable, a reference
    check([form.format(p=p)], [p])


def test_plain_url_users_and_emails_are_kept():
    red = Redactor()
    for text in ["git clone git@github.com:org/repo.git", "ssh://git@github.com/org/repo",
                 "https://alice@example.com/path", "mailto:bob.smith@example.org", "npm i @types/node@20.1.0"]:
        assert red(text) == text


# ---------------------------------------------------------------------------------------------------------
# Assignments

NAMES = ["GITHUB_TOKEN", "DB_PASSWORD", "API_KEY", "client_secret", "STRIPE_SECRET_KEY", "smtpPass"]


@SETTINGS
@given(SEEDS, st.sampled_from(NAMES), st.sampled_from(["export ", "", "ENV "]), st.sampled_from(["", "  ", "\t"]))
def test_value_on_the_next_line(seed, name, prefix, indent):
    rng = random.Random(seed)
    v = password(rng)
    if not prefix and not indent:
        # a .env line `NAME=\` followed by a flush-left line: a literal backslash, the next line its own
        out = Redactor()(f"DEBUG=1\n{name}=\\\nPORT=80")
        assert out.endswith("\nPORT=80") and "[REDACTED:" in out
        return
    check([f"export DEBUG=1\n{prefix}{name}=\\\n{indent}{v}\nexport PORT=80"], [v])


@SETTINGS
@given(SEEDS, st.sampled_from(["db_password", "admin_token", "api_key", "client_secret"]), st.booleans())
def test_nested_object_under_a_secret_name(seed, name, pretty):
    rng = random.Random(seed)
    v = password(rng)
    state = {"version": 4, "outputs": {name: {"value": v, "type": "string", "sensitive": True},
                                       "region": {"value": "eu-west-1", "type": "string"}}}
    text = json.dumps(state, indent=2 if pretty else None)
    out = Redactor()(text)
    assert not leaked(v, out) and "eu-west-1" in out


@SETTINGS
@given(SEEDS, st.sampled_from(["API_TOKEN", "SECRET_KEY", "db_password"]), st.integers(2, 4), st.booleans())
def test_parenthesised_concatenation(seed, name, n, commas):
    rng = random.Random(seed)
    parts = [password(rng, 8, 14, "") for _ in range(n)]
    lines = "\n".join(f'    "{p}"' + ("," if commas and i < n - 1 else "") for i, p in enumerate(parts))
    check([f"import os\n{name} = (\n{lines}\n)\nTIMEOUT = 30"], parts)


@SETTINGS
@given(SEEDS, st.sampled_from(NAMES), st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]),
       st.floats(0.1, 0.9))
def test_zero_width_character_inside_the_name(seed, name, zw, where):
    rng = random.Random(seed)
    v = password(rng)
    at = max(1, min(len(name) - 1, int(where * len(name))))
    check([f"DEBUG=1\n{name[:at]}{zw}{name[at:]}={v}\nPORT=80"], [v])


def test_zero_width_joiners_outside_names_are_kept():
    text = "family: \U0001F468\u200d\U0001F469\u200d\U0001F467 and \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert Redactor()(text) == text


# ---------------------------------------------------------------------------------------------------------
# Command lines

CMDS = ["curl -u admin:{p} https://api.example.com/v1", "curl -s --user 'deploy:{p}' https://x.example.com",
        "curl --user=ci:{p} -X POST https://h", "sshpass -p '{p}' ssh root@10.0.0.2", "sshpass -p{p} scp a b:",
        "docker login -u me -p {p} registry.example.com", "echo ok && docker login --username me --password {p} r.io",
        "kubectl create secret generic db --from-literal=username=app --from-literal=password={p}",
        "kubectl create secret generic api --from-literal=api-key={p} -n prod",
        "mysql -u root -p{p} -h 127.0.0.1", "PGPASSWORD={p} psql -h db -U app",
        "htpasswd -b -c /etc/.htpasswd admin {p}",
        "htpasswd -nb admin {p}", "openssl rsa -in k.pem -passin pass:{p} -out k2.pem",
        "openssl pkcs12 -export -in c.pem -passout pass:{p} -out c.p12"]


@SETTINGS
@given(SEEDS, st.sampled_from(CMDS), st.sampled_from(["$ ", "", "Running: "]))
def test_flags_that_take_a_password(seed, cmd, prompt):
    rng = random.Random(seed)
    p = password(rng, 10, 20, "!%^*_.@#")
    check([f"{prompt}{cmd.format(p=p)}\nexit 0"], [p])


# ---------------------------------------------------------------------------------------------------------
# .netrc, cookies, webhooks

@SETTINGS
@given(SEEDS, st.booleans(), st.booleans())
def test_netrc_password(seed, one_line, as_uuid):
    rng = random.Random(seed)
    p = "-".join(token(rng, n, "0123456789abcdef") for n in (8, 4, 4, 4, 12)) if as_uuid else password(rng)
    text = (f"machine api.example.com login me password {p}\n" if one_line
            else f"machine api.example.com\n  login me\n  password {p}\ndefault login anonymous")
    check([text], [p])


@SETTINGS
@given(SEEDS, st.sampled_from(["set", "header", "curl-b", "curl-cookie", "json"]))
def test_cookies(seed, form):
    rng = random.Random(seed)
    a, b = token(rng, rng.randint(16, 40)), token(rng, rng.randint(16, 40))
    text = {"set": f"< HTTP/1.1 200 OK\n< Set-Cookie: sessionid={a}; Path=/; HttpOnly\n< set-cookie: csrf={b}; Secure",
            "header": f"> GET / HTTP/1.1\n> Cookie: theme=dark; sid={a}; remember={b}\n",
            "curl-b": f"curl -b 'session={a}; uid={b}' https://app.example.com/me",
            "curl-cookie": f'curl --cookie "sid={a}" --cookie "rm={b}" https://app.example.com',
            "json": json.dumps({"headers": {"cookie": f"sid={a}; rm={b}", "accept": "*/*"}})}[form]
    check([text], [a, b])


@SETTINGS
@given(SEEDS, st.sampled_from(["discord", "discordapp", "teams", "outlook"]))
def test_chat_webhooks(seed, kind):
    rng = random.Random(seed)
    t = token(rng, 68, B62 + "_-")
    g = "-".join(token(rng, n, "0123456789abcdef") for n in (8, 4, 4, 4, 12))
    url = {"discord": f"https://discord.com/api/webhooks/{rng.randint(10**17, 10**18)}/{t}",
           "discordapp": f"https://discordapp.com/api/webhooks/{rng.randint(10**17, 10**18)}/{t}",
           "teams": f"https://contoso.webhook.office.com/webhookb2/{g}@{g}/IncomingWebhook/{t[:32]}/{g}",
           "outlook": f"https://outlook.office.com/webhook/{g}@{g}/IncomingWebhook/{t[:32]}/{g}"}[kind]
    secret = t if kind.startswith("discord") else t[:32]
    check([f"curl -X POST -H 'Content-Type: application/json' -d '{{\"content\":\"hi\"}}' {url}"], [secret])


# ---------------------------------------------------------------------------------------------------------
# Prose, shells, file names, terraform output

@SETTINGS
@given(SEEDS, st.sampled_from(["my password is {p}", "The password was {p}.", "Password: {p}", "pw is {p}",
                               "my passphrase is '{p}', keep it", "the wifi password is {p} btw"]),
       st.sampled_from(PROSE))
def test_password_in_prose(seed, form, before):
    rng = random.Random(seed)
    p = password(rng, 8, 16, "!@#$%^&*")
    check([f"{before} {form.format(p=p)}"], [p.rstrip(".,;:!?)]}>")])


@pytest.mark.parametrize("text", ["the password is wrong", "the password: required", "password was not set",
                                  "def login(password: str) -> bool:", "the password is stored hashed",
                                  "password: ${DB_PASSWORD}", "password: hashedPassword,"])
def test_password_prose_words_are_kept(text):
    assert Redactor()(text) == text


@SETTINGS
@given(SEEDS, st.sampled_from(["bash: {t}: command not found", "zsh: command not found: {t}",
                               "bash: line 1: {t}: command not found", "sh: 1: {t}: not found"]))
def test_shell_echoing_a_secret(seed, form):
    rng = random.Random(seed)
    t = token(rng, rng.randint(24, 48), B62 + "_-")
    check([f"$ {t}\n{form.format(t=t)}"[len(t) + 3:]], [t])


def test_shell_echo_of_a_word_is_kept():
    text = "bash: pyhton: command not found"
    assert Redactor()(text) == text


@SETTINGS
@given(SEEDS, st.sampled_from(["cat /tmp/{t}.txt", "ls ~/Downloads/{t}.json", "rm -f ./keys/{t}",
                               "Read /Users/me/secrets/{t}.pem"]))
def test_secret_in_a_file_name(seed, form):
    rng = random.Random(seed)
    t = token(rng, rng.randint(32, 48))
    check([form.format(t=t)], [t])


@SETTINGS
@given(SEEDS, st.sampled_from(["db_password", "admin-token", "api_key", "client_secret"]), st.booleans())
def test_terraform_output_of_a_secret(seed, name, raw):
    rng = random.Random(seed)
    v = password(rng)
    shown = v if raw else json.dumps(v)
    check([f"$ terraform output {'-raw ' if raw else ''}{name}\n{shown}\n$ ls"], [v])


@pytest.mark.parametrize("command", ["terraform output -raw db_password", "terraform output admin_token",
                                     "printenv GITHUB_TOKEN", "echo $API_KEY", 'echo -n "${DB_PASSWORD}"'])
def test_output_of_a_command_that_prints_a_secret(command):
    # the command and its output are two texts (a tool use and its result): the caller passes both
    v = password(random.Random(command))
    assert prints_secret(command)
    assert Redactor().printed_secret(command, v + "\n") == "[REDACTED:printed-secret]"


def test_terraform_output_mentioned_in_prose_keeps_the_next_line():
    # a comment or a sentence naming the command: the line after it is not its output
    text = ("# a secret's value (`terraform output -raw DB_PASSWORD`, `printenv\n"
            "# API_TOKEN`): their result is a separate block\n"
            "Run terraform output -raw db_password to see it.\nThen restart the service.\n")
    assert Redactor()(text) == text


@pytest.mark.parametrize("command", ["terraform output -raw region", "printenv PATH", "echo hello", "ls -la"])
def test_output_of_other_commands_is_redacted_as_usual(command):
    assert not prints_secret(command)
    assert Redactor().printed_secret(command, "eu-west-1\n") == "eu-west-1\n"


# ---------------------------------------------------------------------------------------------------------
# A planted session through the readers that `traces` uses

def _planted(rng: random.Random) -> tuple[list[dict], list[str]]:
    """Transcript lines with one secret of each class (a PEM key split across two tool results), and the
    secrets."""
    kind = "RSA"
    body = key_body(rng)
    key = f"{armour('BEGIN', kind)}\n{body}\n{armour('END', kind)}"
    at = len(key) // 2
    s = {k: password(rng, 12, 20, "!%*_.") for k in (
        "redis", "atpw", "oracle", "export", "tfstate", "concat1", "concat2", "zw", "curl", "sshpass", "docker",
        "kubectl", "htpasswd", "openssl", "netrc", "prose", "tfout")}
    s["url_user"] = token(rng, 40)
    s["cookie"] = token(rng, 32)
    s["echo"] = token(rng, 36)
    s["path"] = token(rng, 40)
    s["discord"] = token(rng, 68, B62 + "_-")
    s["ppk"] = key_body(rng, 2)
    pem2 = f"{armour('BEGIN', 'EC')}\n{key_body(rng, 3)}\n{armour('END', 'EC')}\n"
    s["b64pem"] = base64.b64encode(pem2.encode()).decode()
    s["b64env"] = base64.b64encode(f"API_KEY={token(rng, 24)}\nDEBUG=0\n".encode()).decode()
    s["atpw"] = s["atpw"][:6] + "@" + s["atpw"][6:]
    # a value no shape gives away, printed alone in its own tool result: only the command says it is a secret
    s["printed"] = "correct horse battery staple " + str(rng.randrange(10**6, 10**7))
    zw_name = "API_\u200bTOKEN"
    tools = [
        ("cat ~/.ssh/id_rsa | head -n 6", "$ cat ~/.ssh/id_rsa\n" + key[:at]),
        ("cat ~/.ssh/id_rsa | tail -n +6", key[at:]),
        ("cat .env", f"REDIS_URL=redis://:{s['redis']}@cache:6379\nexport SESSION_SECRET=\\\n  {s['export']}\n"
                     f"{zw_name}={s['zw']}\nDB=postgres://app:{s['atpw']}@db:5432/app"),
        ("cat terraform.tfstate", json.dumps({"outputs": {"db_password": {"value": s["tfstate"], "sensitive": True}}},
                                             indent=2)),
        ("cat settings.py", f'API_TOKEN = (\n    "{s["concat1"]}"\n    "{s["concat2"]}"\n)\n'),
        ("cat deploy.sh", f"curl -u admin:{s['curl']} https://ci.example.com\nsshpass -p '{s['sshpass']}' ssh h\n"
                          f"docker login -u me -p {s['docker']} reg.example.com\n"
                          f"kubectl create secret generic db --from-literal=password={s['kubectl']}\n"
                          f"htpasswd -b -c .htpasswd admin {s['htpasswd']}\n"
                          f"openssl rsa -in k.pem -passin pass:{s['openssl']}\n"
                          f"git clone https://{s['url_user']}@github.com/org/repo.git\n"
                          f"sqlplus scott/{s['oracle']}@//db.example.com:1521/ORCL"),
        ("cat ~/.netrc", f"machine api.example.com\n  login me\n  password {s['netrc']}\n"),
        ("curl -v https://app.example.com", f"< Set-Cookie: sessionid={s['cookie']}; Path=/; HttpOnly"),
        ("cat notify.sh", f"curl -d '{{}}' https://discord.com/api/webhooks/123456789012345678/{s['discord']}"),
        ("cat key.ppk", f"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPublic-Lines: 1\nAAAAC3Nza\n"
                        f"Private-Lines: 2\n{s['ppk']}\nPrivate-MAC: {'ab' * 32}"),
        ("kubectl config view --raw", f"    client-key-data: {s['b64pem']}"),
        ("base64 .env", s["b64env"]),
        (s["echo"], f"bash: {s['echo']}: command not found"),
        (f"ls /tmp/{s['path']}.txt", f"/tmp/{s['path']}.txt"),
        ("terraform output -raw admin_password", f"$ terraform output -raw admin_password\n{s['tfout']}"),
        ("printenv DB_PASSWORD", s["printed"] + "\n"),
    ]
    base = {"sessionId": "11111111-2222-3333-4444-555555555555", "cwd": "/tmp/planted", "isSidechain": False,
            "userType": "external", "version": "2.0.76"}
    lines, prev, n = [], None, 0

    def add(kind: str, message: dict):
        nonlocal prev, n
        n += 1
        uid = f"00000000-0000-0000-0000-{n:012d}"
        lines.append({**base, "type": kind, "uuid": uid, "parentUuid": prev,
                      "timestamp": f"2026-12-07T10:{n // 60:02d}:{n % 60:02d}.000Z", "message": message})
        prev = uid

    add("user", {"role": "user", "content": f"deploy it; my password is {s['prose']} if sudo asks"})
    for i, (cmd, output) in enumerate(tools):
        tid = f"toolu_{i:04d}"
        add("assistant", {"id": f"msg_{i}", "role": "assistant", "type": "message", "model": "m",
                          "content": [{"type": "tool_use", "id": tid, "name": "Bash", "input": {"command": cmd}}]})
        add("user", {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tid, "content": output}]})
    secrets = [v for k, v in s.items() if k != "ppk"] + s["ppk"].split("\n") + body.split("\n")
    return lines, secrets


def _traces(tmp_path, reader: str) -> str:
    lines, secrets = _planted(random.Random(25))
    proj = tmp_path / "projects" / "-tmp-planted"
    proj.mkdir(parents=True)
    f = proj / "11111111-2222-3333-4444-555555555555.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    full = RenderOptions(include_thinking=True, include_meta=True, include_system=True, max_tool_output=0)
    texts = []
    for fmt in ("text", "jsonl"):
        out, err = io.StringIO(), io.StringIO()
        if reader == "python":
            traces_command([str(f)], fmt=fmt, reader="python", opts=full, out=out, err=err)
        else:
            traces_command(["replay"], fmt=fmt, reader="ccsniff", projects=str(tmp_path / "projects"), opts=full,
                           out=out, err=err)
        texts.append(out.getvalue())
    events, _ = asyncio.run(collect("replay", paths=[f], reader="python") if reader == "python"
                            else collect("replay", projects=tmp_path / "projects"))
    assert len(events) == len(lines)  # one event per line: nothing dropped on the way
    return "\n".join(texts), secrets


@pytest.mark.parametrize("reader", ["python", "ccsniff"])
def test_planted_session_leaks_nothing_into_traces(tmp_path, reader):
    text, secrets = _traces(tmp_path, reader)
    # JSON output escapes some characters: look for the secret as written and as JSON writes it
    found = {s: leaked(s, text) + leaked(json.dumps(s)[1:-1], text) for s in secrets}
    assert not {s: w for s, w in found.items() if w}
    assert text.count("[REDACTED:") >= 20


@pytest.mark.parametrize("name", ["prompt_cache_key", "sort_key", "PARTITION_KEY", "cacheKey", "idempotency_key",
                                  "row_key"])
def test_a_key_named_after_what_it_looks_up_is_not_a_secret(name):
    # a request field table (rwkvjax/serve/requests.py) holds `"prompt_cache_key": Field("", _ANY),`
    text = f'    "{name}": Field("", _ANY),\n{name} = build(a, "x")\n'
    assert Redactor()(text) == text


@pytest.mark.parametrize("name", ["API_KEY", "cache_secret_key", "signing_key", "SECRET_KEY"])
def test_other_keys_stay_secrets(name):
    assert "[REDACTED:" in Redactor()(f'"{name}": Field("", _ANY),\n')
