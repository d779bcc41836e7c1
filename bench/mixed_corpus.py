"""A deterministic mixed corpus (code, prose, JSON, logs) for DLP throughput runs.

Built at run time from a fixed seed instead of committing a megabyte of text. Secrets and
personal data appear at roughly the density of real prompts: a few per 100 KB.
"""

from __future__ import annotations

import json
import random
import string

SEED = 4242
ONE_MB = 1_000_000

WORDS = (
    *("the", "gateway", "request", "model", "response", "team", "budget", "latency", "token"),
    *("stream", "retry", "provider", "policy", "tenant", "route", "upstream", "cache", "error"),
    *("timeout", "config", "deploy", "review", "merge", "branch", "customer", "invoice"),
    *("report", "quarter", "meeting", "design", "feature", "user", "account", "service"),
    *("queue", "worker", "database", "index", "query", "migration", "schema", "field"),
    *("value", "test", "build", "release", "note"),
)
FUNCTIONS = ["load_config", "send_batch", "parse_header", "retry_later", "render_page"]
LEVELS = ["INFO", "DEBUG", "WARN", "ERROR"]


def prose(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(3, 8)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences) + "\n\n"


def code(rng: random.Random) -> str:
    name = rng.choice(FUNCTIONS)
    arg = rng.choice(WORDS)
    return (
        f"def {name}_{rng.randint(1, 999)}({arg}: dict[str, str], "
        f"limit: int = {rng.randint(1, 64)}) -> list[str]:\n"
        f'    """Return the {rng.choice(WORDS)} entries of {arg}."""\n'
        f"    found = []\n"
        f"    for key, value in sorted({arg}.items()):\n"
        f"        if len(found) >= limit:\n"
        f"            break\n"
        f'        if key.startswith("{rng.choice(WORDS)}"):\n'
        f"            found.append(value.strip())\n"
        f"    return found\n\n"
    )


def json_block(rng: random.Random) -> str:
    record = {
        "id": rng.randint(1, 10**6),
        "status": rng.choice(["ok", "failed", "pending"]),
        "items": [
            {"sku": "".join(rng.choices(string.ascii_uppercase, k=6)), "qty": rng.randint(1, 9)}
            for _ in range(rng.randint(1, 4))
        ],
        "note": " ".join(rng.choice(WORDS) for _ in range(8)),
    }
    return json.dumps(record, indent=2) + "\n"


def log_lines(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 10)):
        lines.append(
            f"2026-03-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}Z {rng.choice(LEVELS)} "
            f"{rng.choice(WORDS)}.{rng.choice(WORDS)} "
            f"duration_ms={rng.randint(1, 900)} status={rng.choice([200, 201, 404, 500])}"
        )
    return "\n".join(lines) + "\n"


def sprinkle(rng: random.Random) -> str:
    """One piece of sensitive data, in a sentence or a config line."""
    alnum = string.ascii_letters + string.digits
    choices = [
        f"Contact dana.{rng.randint(1, 99)}@example.org about the invoice.\n",
        f"client ip 203.0.113.{rng.randint(1, 254)} hit the rate limit\n",
        f"AWS_ACCESS_KEY_ID=AKIA{''.join(rng.choices(string.ascii_uppercase + '234567', k=16))}\n",
        f"OPENAI_API_KEY=sk-{''.join(rng.choices(alnum, k=20))}T3BlbkFJ"
        f"{''.join(rng.choices(alnum, k=20))}\n",
        "card on file 4111 1111 1111 1111, expires 04/29\n",
        "Call me on +44 20 7946 0958 tomorrow.\n",
    ]
    return rng.choice(choices)


def mixed_corpus(size: int = ONE_MB, seed: int = SEED) -> str:
    """`size` characters of mixed text; the same seed always gives the same text."""
    rng = random.Random(seed)
    makers = [prose, code, json_block, log_lines]
    parts: list[str] = []
    length = 0
    while length < size:
        # About one sensitive item per 25 KB.
        part = sprinkle(rng) if rng.random() < 0.02 else rng.choice(makers)(rng)
        parts.append(part)
        length += len(part)
    return "".join(parts)[:size]
