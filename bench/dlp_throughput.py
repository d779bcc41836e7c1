"""DLP engine speed: MB/s over a 1 MB mixed corpus, the latency of scanning a 4 KB prompt, and
the one-off time to build the scanner.

Run with `uv run python bench/dlp_throughput.py`; prints a Markdown report and writes it to
bench/results/dlp-throughput.md. Single-threaded, so one core.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentwatch.dlp.engine import Scanner
from machine import cpu_model, gateway_revision
from mixed_corpus import ONE_MB, mixed_corpus, prose

BENCH_DIR = Path(__file__).resolve().parent
RESULT_FILE = BENCH_DIR / "results" / "dlp-throughput.md"
PROMPT_SIZE = 4096
TARGET_MB_PER_S = 50.0
TARGET_P50_MS = 0.2


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    findings: int


def throughput_mb_per_s(scan: Callable[[str], object], text: str, runs: int) -> float:
    """Best of `runs` timed scans after one warm-up scan; MB is 10^6 bytes of UTF-8."""
    scan(text)
    best_ns = min(_timed_ns(scan, text) for _ in range(runs))
    return len(text.encode()) / 1e6 / (best_ns / 1e9)


def latency(scan: Callable[[str], Sequence[object]], text: str, scans: int) -> Latency:
    for _ in range(max(10, scans // 10)):
        scan(text)
    samples = sorted(_timed_ns(scan, text) for _ in range(scans))
    return Latency(
        p50_ms=samples[len(samples) // 2] / 1e6,
        p99_ms=samples[min(len(samples) - 1, len(samples) * 99 // 100)] / 1e6,
        findings=len(scan(text)),
    )


def _timed_ns(scan: Callable[[str], object], text: str) -> int:
    start = time.perf_counter_ns()
    scan(text)
    return time.perf_counter_ns() - start


def clean_prompt(size: int = PROMPT_SIZE, seed: int = 7) -> str:
    """Ordinary prose with nothing sensitive in it."""
    rng = random.Random(seed)
    text = ""
    while len(text) < size:
        text += prose(rng)
    return text[:size]


def prompt_with_findings(size: int = PROMPT_SIZE) -> str:
    """The clean prompt with an email address and an AWS key id in the middle."""
    clean = clean_prompt(size)
    inserted = " Mail jane.doe@example.com the key AKIAQ3EGRXKPLMWN7ZTB today. "
    middle = size // 2
    return (clean[:middle] + inserted + clean[middle:])[:size]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="timed passes over the corpus")
    parser.add_argument("--scans", type=int, default=5000, help="timed scans per prompt")
    args = parser.parse_args(argv)
    started = time.perf_counter_ns()
    scanner = Scanner()  # what `default_scanner()` builds once per process
    build_ms = (time.perf_counter_ns() - started) / 1e6
    corpus = mixed_corpus(ONE_MB)
    mb_per_s = throughput_mb_per_s(scanner.scan, corpus, args.runs)
    corpus_findings = len(scanner.scan(corpus))
    clean = latency(scanner.scan, clean_prompt(), args.scans)
    dirty = latency(scanner.scan, prompt_with_findings(), args.scans)
    worst_p50 = max(clean.p50_ms, dirty.p50_ms)
    report = "\n".join(
        [
            "## DLP throughput",
            "",
            f"{cpu_model()}, {gateway_revision()}, one core, `time.perf_counter_ns`.",
            "",
            "| measure | value | target |",
            "|---|--:|--:|",
            f"| 1 MB mixed corpus, best of {args.runs} | {mb_per_s:.1f} MB/s "
            f"({corpus_findings} findings) | ≥ {TARGET_MB_PER_S:.0f} MB/s |",
            f"| 4 KB prompt, no findings ({clean.findings} found), p50 / p99 over {args.scans} | "
            f"{clean.p50_ms:.3f} / {clean.p99_ms:.3f} ms | p50 < {TARGET_P50_MS} ms |",
            f"| 4 KB prompt, {dirty.findings} findings, p50 / p99 over {args.scans} | "
            f"{dirty.p50_ms:.3f} / {dirty.p99_ms:.3f} ms | p50 < {TARGET_P50_MS} ms |",
            f"| building the scanner (Hyperscan compile), once | {build_ms:.0f} ms | - |",
            "",
            f"- throughput target {'met' if mb_per_s >= TARGET_MB_PER_S else 'MISSED'}; "
            f"4 KB p50 target {'met' if worst_p50 < TARGET_P50_MS else 'MISSED'}",
        ]
    )
    print(report)
    RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULT_FILE.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
