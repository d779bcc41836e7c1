"""Write bench/data/secrets_corpus.jsonl: labelled secrets in realistic contexts, and near-misses.

Every value is generated from a fixed seed (format-correct, never a real key), so rerunning
`uv run python bench/make_secrets_corpus.py` reproduces the committed file byte for byte.
Gold spans cover the secret value only (not `KEY=` or quotes; in a connection string, the
password), which is the least a detector must find; a finding that covers more of the line
still overlaps the whole gold span.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import string
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "data" / "secrets_corpus.jsonl"
SEED = 20261128
ALNUM = string.ascii_letters + string.digits
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
RECORDS_PER_DETECTOR = 8


@dataclass
class Record:
    """Text built piece by piece, remembering where each labelled secret landed."""

    text: str = ""
    spans: list[dict[str, int | str]] = field(default_factory=list)

    def add(self, piece: str) -> Record:
        self.text += piece
        return self

    def secret(self, detector: str, value: str) -> Record:
        start = len(self.text)
        self.text += value
        first, last = secret_part(detector, value)
        self.spans.append({"detector": detector, "start": start + first, "end": start + last})
        return self


def secret_part(detector: str, value: str) -> tuple[int, int]:
    """Where the secret sits in a value: in a connection string, the password alone."""
    if detector == "db_connection_string":
        credentials = value.index("://") + 3
        return value.index(":", credentials) + 1, value.rindex("@")
    return 0, len(value)


def pick(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def base62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, remainder = divmod(number, 62)
        digits = BASE62[remainder] + digits
    return digits.rjust(width, "0")


def crc_token(prefix: str, body: str) -> str:
    """GitHub / npm token layout: 30 random characters and a base62 CRC32 of them."""
    return f"{prefix}{body}{base62(zlib.crc32(body.encode()), 6)}"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# One generator per detector id of the contract: a format-correct random value.
def openai_key(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"sk-{pick(rng, ALNUM, 20)}T3BlbkFJ{pick(rng, ALNUM, 20)}"
    return f"sk-proj-{pick(rng, URLSAFE, 74)}T3BlbkFJ{pick(rng, URLSAFE, 74)}"


def anthropic_key(rng: random.Random) -> str:
    return f"sk-ant-api03-{pick(rng, URLSAFE, 93)}AA"


def aws_key_id(rng: random.Random) -> str:
    return rng.choice(["AKIA", "ASIA"]) + pick(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)


def aws_secret(rng: random.Random) -> str:
    return pick(rng, B64, 40)


def github_token(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return f"github_pat_11{pick(rng, ALNUM, 20)}_{pick(rng, ALNUM, 59)}"
    return crc_token(rng.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]), pick(rng, ALNUM, 30))


def gitlab_token(rng: random.Random) -> str:
    return f"glpat-{pick(rng, URLSAFE, 20)}"


def slack_token(rng: random.Random) -> str:
    kind = rng.choice(["xoxb", "xoxp", "xoxa"])
    digits = string.digits
    return f"{kind}-{pick(rng, digits, 12)}-{pick(rng, digits, 13)}-{pick(rng, ALNUM, 24)}"


def slack_webhook(rng: random.Random) -> str:
    upper = string.ascii_uppercase + string.digits
    return (
        f"https://hooks.slack.com/services/T{pick(rng, upper, 8)}/B{pick(rng, upper, 10)}/"
        f"{pick(rng, ALNUM, 24)}"
    )


def stripe_key(rng: random.Random) -> str:
    return f"{rng.choice(['sk_live_', 'rk_live_'])}{pick(rng, ALNUM, rng.choice([24, 99]))}"


def google_key(rng: random.Random) -> str:
    return f"AIza{pick(rng, URLSAFE, 35)}"


def azure_key(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(64)).decode()


def twilio_key(rng: random.Random) -> str:
    return f"SK{pick(rng, HEX, 32)}"


def sendgrid_key(rng: random.Random) -> str:
    return f"SG.{pick(rng, URLSAFE, 22)}.{pick(rng, URLSAFE, 43)}"


def npm_token(rng: random.Random) -> str:
    return crc_token("npm_", pick(rng, ALNUM, 30))


def pypi_token(rng: random.Random) -> str:
    return f"pypi-AgEIcHlwaS5vcmcCJ{pick(rng, URLSAFE, 150)}"


def jwt(rng: random.Random) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "sub": str(rng.randint(10**5, 10**9)),
        "iat": rng.randint(1_600_000_000, 1_800_000_000),
    }
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(rng.randbytes(32), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{b64url(signature.digest())}"


def private_key(rng: random.Random) -> str:
    kind, size = rng.choice([("RSA ", 1190), ("EC ", 121), ("", 1218), ("OPENSSH ", 387)])
    body = base64.b64encode(rng.randbytes(size)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"


def db_url(rng: random.Random) -> str:
    scheme, port = rng.choice(
        [("postgres", 5432), ("postgresql", 5432), ("mysql", 3306), ("mongodb", 27017),
         ("redis", 6379), ("amqp", 5672)]
    )  # fmt: skip
    user = rng.choice(["app", "admin", "billing_rw", "svc_orders", "root"])
    host = rng.choice(["db.internal", "10.2.3.4", "prod-pg.cluster-x.eu-west-1.rds.amazonaws.com"])
    return f"{scheme}://{user}:{pick(rng, ALNUM + '!*-_', 18)}@{host}:{port}/{user}db"


def password(rng: random.Random) -> str:
    words = ["Summer", "Falcon", "orange", "Tiger", "blue", "Winter", "Rocket", "maple"]
    if rng.random() < 0.5:
        return f"{rng.choice(words)}{rng.choice(words)}{rng.randint(10, 9999)}{rng.choice('!#$%&')}"
    return pick(rng, ALNUM + "!#$%&*+-", rng.randint(12, 24))


def entropy_secret(rng: random.Random) -> str:
    return rng.choice([pick(rng, ALNUM, 32), pick(rng, HEX, 64), pick(rng, URLSAFE, 43)])


DETECTORS: dict[str, tuple[Callable[[random.Random], str], list[str]]] = {
    "openai_api_key": (openai_key, ["OPENAI_API_KEY", "openai_api_key", "apiKey"]),
    "anthropic_api_key": (anthropic_key, ["ANTHROPIC_API_KEY", "anthropic_key", "x-api-key"]),
    "aws_access_key_id": (aws_key_id, ["AWS_ACCESS_KEY_ID", "aws_access_key_id", "accessKeyId"]),
    "aws_secret_access_key": (
        aws_secret,
        ["AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "secretAccessKey"],
    ),
    "github_token": (github_token, ["GITHUB_TOKEN", "GH_TOKEN", "github_token"]),
    "gitlab_token": (gitlab_token, ["GITLAB_TOKEN", "CI_JOB_TOKEN_OVERRIDE", "gitlab_token"]),
    "slack_token": (slack_token, ["SLACK_BOT_TOKEN", "slack_token", "SLACK_TOKEN"]),
    "slack_webhook": (slack_webhook, ["SLACK_WEBHOOK_URL", "webhook_url", "alerts_webhook"]),
    "stripe_key": (stripe_key, ["STRIPE_SECRET_KEY", "stripe_key", "STRIPE_API_KEY"]),
    "google_api_key": (google_key, ["GOOGLE_API_KEY", "MAPS_API_KEY", "firebaseApiKey"]),
    "azure_storage_key": (azure_key, ["AZURE_STORAGE_KEY", "storage_account_key", "AccountKey"]),
    "twilio_key": (twilio_key, ["TWILIO_API_KEY", "twilio_api_key", "TWILIO_KEY_SID"]),
    "sendgrid_key": (sendgrid_key, ["SENDGRID_API_KEY", "sendgrid_key", "SENDGRID_KEY"]),
    "npm_token": (npm_token, ["NPM_TOKEN", "npm_token", "NODE_AUTH_TOKEN"]),
    "pypi_token": (pypi_token, ["PYPI_TOKEN", "TWINE_PASSWORD", "pypi_api_token"]),
    "jwt": (jwt, ["AUTH_TOKEN", "access_token", "id_token"]),
    "private_key": (private_key, ["TLS_KEY", "ssh_private_key", "signing_key"]),
    "db_connection_string": (db_url, ["DATABASE_URL", "db_url", "MONGO_URI"]),
    "password_assignment": (password, ["password", "DB_PASSWORD", "smtp_pass"]),
    "high_entropy_secret": (entropy_secret, ["SIGNING_KEY", "api_token", "encryption_key"]),
}


# Contexts: text before the value and after it; {name} is the variable name.
CONTEXTS: list[tuple[str, str]] = [
    ("# .env\nDEBUG=false\nPORT=8080\n{name}=", "\nLOG_LEVEL=info\n"),
    ("$ export {name}='", "'\n$ python manage.py runserver\n"),
    ('import os\n\nclient = Client(\n    {name}="', '",\n    timeout=30,\n)\n'),
    ("const config = {{\n  region: 'eu-west-1',\n  {name}: '",
     "',\n}};\nmodule.exports = config;\n"),
    ("service:\n  name: orders\n  credentials:\n    {name}: ", "\n  replicas: 3\n"),
    ('{{"env": "prod", "{name}": "', '", "retries": 3}}'),
    ("2026-03-02T10:14:07.332Z INFO  boot config loaded {name}=", " pid=4412\n"),
    ("services:\n  api:\n    image: acme/api:1.4\n    environment:\n      - {name}=", "\n"),
    ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\nstringData:\n  {name}: ", "\n"),
    ("my code fails, here is my setup:\n\n{name} = \"", "\"\n\nwhy does it return 401?\n"),
    ("Traceback (most recent call last):\n  File \"app.py\", line 12, in <module>\n"
     "    connect({name}=\"", "\")\nConnectionError: timed out\n"),
]  # fmt: skip

HEADER_CONTEXTS: list[tuple[str, str]] = [
    ('curl https://api.example.com/v1/items -H "Authorization: Bearer ', '"\n'),
    ("GET /v2/orders HTTP/1.1\nHost: api.internal\nAuthorization: Bearer ", "\n\n"),
]


def true_records(rng: random.Random) -> list[Record]:
    records: list[Record] = []
    for detector, (generate, names) in DETECTORS.items():
        for index in range(RECORDS_PER_DETECTOR):
            value = generate(rng)
            name = names[index % len(names)]
            if detector == "azure_storage_key" and index % 2 == 0:
                record = Record().add(
                    "AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;"
                    f"AccountName=acme{rng.randint(1, 99)};AccountKey="
                )
                records.append(
                    record.secret(detector, value).add(";EndpointSuffix=core.windows.net\n")
                )
                continue
            if detector in {"jwt", "openai_api_key", "github_token"} and index == 0:
                before, after = HEADER_CONTEXTS[rng.randrange(len(HEADER_CONTEXTS))]
            elif detector == "private_key" and index % 2 == 0:
                before, after = (
                    "$ cat ~/.ssh/id_deploy\n",
                    "\n$ ssh -i ~/.ssh/id_deploy deploy@10.0.0.5\n",
                )
            else:
                before, after = CONTEXTS[(index + len(records)) % len(CONTEXTS)]
            records.append(
                Record()
                .add(before.format(name=name))
                .secret(detector, value)
                .add(after.format(name=name))
            )
    # A few files with several secrets, as people paste them.
    for _ in range(6):
        record = (
            Record()
            .add("# production.env\nAWS_ACCESS_KEY_ID=")
            .secret("aws_access_key_id", aws_key_id(rng))
        )
        record.add("\nAWS_SECRET_ACCESS_KEY=").secret("aws_secret_access_key", aws_secret(rng))
        record.add("\nDATABASE_URL=").secret("db_connection_string", db_url(rng))
        record.add("\nSTRIPE_SECRET_KEY=").secret("stripe_key", stripe_key(rng))
        records.append(record.add("\nFEATURE_FLAGS=new_checkout,dark_mode\n"))
    return records


def near_misses(rng: random.Random) -> list[str]:
    """Text that looks like a secret to a careless pattern and is not one."""

    def sha1() -> str:
        return pick(rng, HEX, 40)

    def sha256() -> str:
        return pick(rng, HEX, 64)

    texts: list[str] = []
    for _ in range(6):
        texts.append(f"commit {sha1()}\nAuthor: Dana <dana@example.com>\n\n    Fix flaky test\n")
        texts.append(
            f"2026-03-02 10:14:07 INFO request_id={uuid.UUID(int=rng.getrandbits(128))} 200 OK\n"
        )
        texts.append(f"sha256:{sha256()}  dist/agentwatch-0.1.0.tar.gz\n")
    for _ in range(4):
        image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.randbytes(300)).decode()
        texts.append(f'<img src="data:image/png;base64,{image}" alt="logo">\n')
        texts.append(
            f'"node_modules/left-pad": {{\n  "version": "1.3.0",\n  "integrity": '
            f'"sha512-{base64.b64encode(rng.randbytes(64)).decode()}"\n}}\n'
        )
        texts.append(f"FROM python:3.11-slim@sha256:{sha256()}\nRUN pip install uv\n")
        texts.append(f"pick {sha1()[:7]} Add retries\npick {sha1()[:7]} Update docs\n")
    texts += [
        "OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
        "OPENAI_API_KEY=sk-...\n# get one at https://platform.openai.com/api-keys\n",
        'client = OpenAI(api_key="sk-your-key-here")\n',
        "ANTHROPIC_API_KEY=<your-anthropic-key>\n",
        "GITHUB_TOKEN=ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\n",
        "SLACK_WEBHOOK_URL=https://hooks.slack.com/services/XXX/YYY/ZZZ\n",
        "STRIPE_SECRET_KEY=sk_live_...\n",
        # AWS's documented example credentials: public, tied to no account; a gateway that blocks
        # them blocks people pasting the AWS docs, so they are near-misses here.
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        'password = os.environ["PW"]\n',
        "DB_PASSWORD=${DB_PASSWORD}\n",
        "      - POSTGRES_PASSWORD=${POSTGRES_PASSWORD:?set it in .env}\n",
        "  password: {{ .Values.postgresql.auth.password }}\n",
        "        valueFrom:\n          secretKeyRef:\n"
        "            name: db\n            key: password\n",
        "password = getpass.getpass('Password: ')\n",
        "if not password:\n    raise ValueError('password is required')\n",
        "DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME\n",
        "DATABASE_URL=postgres://postgres@localhost:5432/app_test\n",
        "const token = req.headers.authorization?.split(' ')[1];\n",
        "Authorization: Bearer <token>\n",
        "api_key = settings.API_KEY  # loaded from the vault at start-up\n",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
        "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam.\n",
        "The password policy requires 12 characters; rotate your secret key every 90 days.\n",
        ".btn-primary { color: #1a2b3c; background: #ffcc00; border-color: #0d6efd; }\n",
        f"ObjectId('{pick(rng, HEX, 24)}') inserted into orders\n",
        "Downloading https://files.pythonhosted.org/packages/"
        f"{pick(rng, HEX, 2)}/{pick(rng, HEX, 2)}/{pick(rng, HEX, 60)}/"
        "httpx-0.27.0-py3-none-any.whl\n",
        f"# invalid checksum: not a GitHub token\nGITHUB_TOKEN=ghp_{pick(rng, ALNUM, 30)}abcdef\n",
        f"NPM_TOKEN=npm_{pick(rng, ALNUM, 30)}zzzzzz  # checksum fails\n",
        "sk-proj-REPLACE_ME\n",
        "export AWS_SECRET_ACCESS_KEY=$(vault kv get -field=secret aws/prod)\n",
    ]
    return texts


def build() -> list[Record]:
    rng = random.Random(SEED)
    records = true_records(rng)
    records += [Record(text=text) for text in near_misses(rng)]
    return records


def main() -> None:
    lines = [json.dumps({"text": r.text, "spans": r.spans}) for r in build()]
    OUTPUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} records to {OUTPUT}")


if __name__ == "__main__":
    main()
