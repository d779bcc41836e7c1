"""The DLP benchmark scripts run on tiny inputs, so they cannot rot between benchmark runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH_DIR))

import dlp_accuracy  # noqa: E402
import dlp_throughput  # noqa: E402
import make_secrets_corpus  # noqa: E402
import mixed_corpus  # noqa: E402
from agentwatch.dlp.engine import default_scanner  # noqa: E402
from agentwatch.dlp.types import Category, Finding, Severity  # noqa: E402


def finding(start: int, end: int, detector: str = "email") -> Finding:
    return Finding(detector, Category.PII, Severity.MEDIUM, start, end, 0.9)


def test_scoring_needs_half_the_gold_span_and_uses_each_span_once() -> None:
    tally = dlp_accuracy.Tally()
    gold = [dlp_accuracy.GoldSpan("EMAIL_ADDRESS", 10, 20)]
    text = "x" * 40
    dlp_accuracy.score_label(tally, text, gold, [finding(14, 30), finding(12, 20), finding(30, 35)])
    assert (tally.true_positives, tally.false_positives, tally.false_negatives) == (1, 1, 0)
    assert tally.found == 3  # the second finding on the matched span is neither TP nor FP

    short = dlp_accuracy.Tally()
    dlp_accuracy.score_label(short, text, gold, [finding(16, 30)])
    assert (short.true_positives, short.false_positives, short.false_negatives) == (0, 1, 1)


def test_accuracy_runs_on_a_tiny_presidio_file(tmp_path: Path) -> None:
    text = "Write to ana@example.com or call 212-555-0187."
    email = text.index("ana@")
    records = [
        {
            "full_text": text,
            "spans": [
                {
                    "entity_type": "EMAIL_ADDRESS",
                    "start_position": email,
                    "end_position": email + 15,
                },
                {"entity_type": "PERSON", "start_position": 0, "end_position": 1},
            ],
        }
    ]
    dataset = tmp_path / "tiny.json"
    dataset.write_text(json.dumps(records))
    loaded = dlp_accuracy.load_presidio(dataset)
    assert [span.label for span in loaded[0].spans] == ["EMAIL_ADDRESS"]
    tallies = dlp_accuracy.measure_presidio(default_scanner(), loaded)
    assert tallies["EMAIL_ADDRESS"].true_positives == 1
    assert "| EMAIL_ADDRESS | 1 |" in dlp_accuracy.render_table("tiny", tallies)


def test_secrets_corpus_is_what_the_generator_writes() -> None:
    committed = dlp_accuracy.SECRETS_CORPUS.read_text().splitlines()
    regenerated = [
        json.dumps({"text": r.text, "spans": r.spans}) for r in make_secrets_corpus.build()
    ]
    assert committed == regenerated
    records = dlp_accuracy.load_secrets(dlp_accuracy.SECRETS_CORPUS)
    assert sum(1 for r in records if r.spans) >= 150
    assert sum(1 for r in records if not r.spans) >= 60
    assert {s.label for r in records for s in r.spans} == set(make_secrets_corpus.DETECTORS)
    tallies = dlp_accuracy.measure_secrets(default_scanner(), records[:5], ["openai_api_key"])
    assert tallies[dlp_accuracy.ANY_SECRET].gold == sum(len(r.spans) for r in records[:5])


def test_throughput_runs_on_a_small_corpus() -> None:
    corpus = mixed_corpus.mixed_corpus(20_000)
    assert len(corpus) == 20_000
    assert corpus == mixed_corpus.mixed_corpus(20_000)
    scanner = default_scanner()
    assert dlp_throughput.throughput_mb_per_s(scanner.scan, corpus, runs=1) > 0
    result = dlp_throughput.latency(scanner.scan, dlp_throughput.prompt_with_findings(), scans=20)
    assert 0 < result.p50_ms <= result.p99_ms
    assert len(dlp_throughput.clean_prompt()) == dlp_throughput.PROMPT_SIZE
