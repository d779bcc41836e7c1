"""Token counting speed: a prompt counted with tiktoken (an o200k-sized vocabulary) and with
the approximation, at several prompt sizes, plus the time to load the encoding file.

No encoding file is downloaded: the vocabulary is synthetic, every byte then the prefixes of
the most frequent word-like pieces of the installed Python packages' sources, so
common words are single tokens as in the real one. Counts differ from OpenAI's; speed is the
point. Usage: uv run python bench/token_count.py [--sizes 1000,4000,100000,1000000] [--runs 30]
"""

from __future__ import annotations

import argparse
import base64
import collections
import re
import sysconfig
import tempfile
import time
from pathlib import Path

from agentwatch.tokens import TOKENS_DIR, TokenCounter

VOCABULARY = 199_000


def synthetic_vocabulary(source: Path, size: int, limit_files: int = 4000) -> bytes:
    pieces: collections.Counter[str] = collections.Counter()
    pattern = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\w\s]+|\s+")  # close to o200k's pieces
    for path in sorted(source.rglob("*.py"))[:limit_files]:
        try:
            pieces.update(pattern.findall(path.read_text(errors="replace")))
        except OSError:
            continue
    ranks = {bytes([b]): b for b in range(256)}
    for piece, _ in pieces.most_common():
        data = piece.encode()
        for end in range(2, len(data) + 1):
            ranks.setdefault(data[:end], len(ranks))
        if len(ranks) >= size:
            break
    return b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in ranks.items())


def prompt(corpus: str, size: int) -> dict[str, object]:
    text = (corpus * (size // len(corpus) + 1))[:size]
    return {"messages": [{"role": "user", "content": text}]}


def fastest(counter: TokenCounter, payload: dict[str, object], runs: int) -> tuple[float, int]:
    best, tokens = float("inf"), 0
    for _ in range(runs):
        started = time.perf_counter()
        tokens = counter.count_prompt_tokens("/v1/chat/completions", payload, "gpt-4o")
        best = min(best, time.perf_counter() - started)
    return best, tokens


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,4000,16000,100000,1000000")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--vocabulary", type=int, default=VOCABULARY)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    corpus = (root / "docs" / "api.md").read_text() + (root / "README.md").read_text()
    with tempfile.TemporaryDirectory() as data_dir:
        path = Path(data_dir) / TOKENS_DIR / "o200k_base.tiktoken"
        path.parent.mkdir()
        path.write_bytes(
            synthetic_vocabulary(Path(sysconfig.get_paths()["purelib"]), args.vocabulary)
        )
        started = time.perf_counter()
        exact = TokenCounter.load(Path(data_dir))
        loaded = time.perf_counter() - started
    lines = [
        f"o200k-sized file ({args.vocabulary} ranks) loaded in {loaded * 1000:.0f} ms",
        "| prompt bytes | tiktoken (fastest) | approximation (fastest) |",
        "| ---: | ---: | ---: |",
    ]
    for size in (int(s) for s in args.sizes.split(",")):
        payload = prompt(corpus, size)
        tiktoken_s, _ = fastest(exact, payload, args.runs)
        approx_s, _ = fastest(TokenCounter(), payload, args.runs)
        lines.append(f"| {size:,} | {tiktoken_s * 1e6:,.0f} us | {approx_s * 1e6:,.1f} us |")
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
