"""Precision and recall of the DLP engine: presidio's synthetic PII set and our secrets corpus.

Run with `uv run python bench/dlp_accuracy.py [--dataset PATH]`; prints a Markdown report and
writes it to bench/results/dlp-accuracy.md. It always exits 0: it reports, people judge.

Scoring: a finding is a true positive when it overlaps a not yet matched gold span of its
label by at least half of the gold span; a finding that overlaps no gold span of its label
that much is a false positive; a second finding on an already matched span counts as neither.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentwatch.dlp.detectors import BUILTIN
from agentwatch.dlp.engine import Scanner, default_scanner
from agentwatch.dlp.types import Category, Finding

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_DATASET = REPO_DIR.parent / "shared" / "data" / "dlp" / "presidio_synth_dataset_v2.json"
SECRETS_CORPUS = BENCH_DIR / "data" / "secrets_corpus.jsonl"
RESULT_FILE = BENCH_DIR / "results" / "dlp-accuracy.md"
TARGET = 0.95
MIN_OVERLAP = 0.5

# presidio entity type -> the detector ids whose findings count for it.
PRESIDIO_DETECTORS: dict[str, frozenset[str]] = {
    "CREDIT_CARD": frozenset({"credit_card"}),
    "EMAIL_ADDRESS": frozenset({"email"}),
    "IBAN_CODE": frozenset({"iban"}),
    "US_SSN": frozenset({"us_ssn"}),
    "IP_ADDRESS": frozenset({"ipv4", "ipv6"}),
    "PHONE_NUMBER": frozenset({"phone"}),
}
# Issue 6 holds these to 0.95/0.95: validated by a checksum (card Luhn, IBAN mod-97) or by
# issuing rules (SSN area/group/serial).
CHECKSUMMED = frozenset({"CREDIT_CARD", "IBAN_CODE", "US_SSN"})
ANY_SECRET = "any secret detector"


@dataclass(frozen=True, slots=True)
class GoldSpan:
    label: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LabelledText:
    text: str
    spans: tuple[GoldSpan, ...]


@dataclass(slots=True)
class Tally:
    gold: int = 0
    found: int = 0
    true_positives: int = 0
    false_positives: int = 0
    false_positive_texts: list[str] = field(default_factory=list)
    missed_texts: list[str] = field(default_factory=list)

    @property
    def false_negatives(self) -> int:
        return self.gold - self.true_positives

    @property
    def precision(self) -> float:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.gold if self.gold else 1.0

    def meets(self, target: float = TARGET) -> bool:
        return self.precision >= target and self.recall >= target


def load_presidio(path: Path) -> list[LabelledText]:
    records = json.loads(path.read_text())
    return [
        LabelledText(
            text=record["full_text"],
            spans=tuple(
                GoldSpan(span["entity_type"], span["start_position"], span["end_position"])
                for span in record["spans"]
                if span["entity_type"] in PRESIDIO_DETECTORS
            ),
        )
        for record in records
    ]


def load_secrets(path: Path) -> list[LabelledText]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        LabelledText(
            text=record["text"],
            spans=tuple(GoldSpan(s["detector"], s["start"], s["end"]) for s in record["spans"]),
        )
        for record in records
    ]


def overlaps_enough(finding: Finding, gold: GoldSpan) -> bool:
    shared = min(finding.end, gold.end) - max(finding.start, gold.start)
    return shared >= MIN_OVERLAP * (gold.end - gold.start)


def score_label(
    tally: Tally, text: str, gold: Sequence[GoldSpan], findings: Iterable[Finding]
) -> None:
    """Match one text's findings for one label against its gold spans, each used once."""
    tally.gold += len(gold)
    matched: set[int] = set()
    for finding in findings:
        tally.found += 1
        hits = [i for i, span in enumerate(gold) if overlaps_enough(finding, span)]
        free = [i for i in hits if i not in matched]
        if free:
            matched.add(free[0])
            tally.true_positives += 1
        elif not hits:
            tally.false_positives += 1
            tally.false_positive_texts.append(
                f"{finding.detector}: {text[finding.start : finding.end]!r}"
            )
    tally.missed_texts += [
        f"{span.label}: {text[span.start : span.end]!r}"
        for i, span in enumerate(gold)
        if i not in matched
    ]


def measure_presidio(scanner: Scanner, records: Sequence[LabelledText]) -> dict[str, Tally]:
    tallies = {label: Tally() for label in PRESIDIO_DETECTORS}
    for record in records:
        findings = scanner.scan(record.text)
        for label, detectors in PRESIDIO_DETECTORS.items():
            gold = [span for span in record.spans if span.label == label]
            mine = [f for f in findings if f.detector in detectors]
            score_label(tallies[label], record.text, gold, mine)
    return tallies


def measure_secrets(
    scanner: Scanner, records: Sequence[LabelledText], detector_ids: Iterable[str]
) -> dict[str, Tally]:
    """Per detector id (strict: the finding must carry the gold label), then any secret at all.

    Which generic detector claims `api_token = "..."` is the engine's call, so the last row,
    where any SECRET finding may match any gold secret, is the one that says whether secrets leak.
    """
    labels = sorted(set(detector_ids) | {s.label for r in records for s in r.spans})
    tallies = {label: Tally() for label in [*labels, ANY_SECRET]}
    for record in records:
        findings = [f for f in scanner.scan(record.text) if f.category == Category.SECRET]
        for label in labels:
            gold = [span for span in record.spans if span.label == label]
            score_label(
                tallies[label], record.text, gold, [f for f in findings if f.detector == label]
            )
        score_label(tallies[ANY_SECRET], record.text, record.spans, findings)
    return tallies


def render_table(title: str, tallies: Mapping[str, Tally]) -> str:
    lines = [
        f"### {title}",
        "",
        "| type | gold | found | TP | FP | FN | precision | recall |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for label, t in tallies.items():
        lines.append(
            f"| {label} | {t.gold} | {t.found} | {t.true_positives} | {t.false_positives} | "
            f"{t.false_negatives} | {t.precision:.3f} | {t.recall:.3f} |"
        )
    judged = {label: t for label, t in tallies.items() if t.gold or t.found}
    met = [label for label, t in judged.items() if t.meets()]
    missed = [label for label, t in judged.items() if not t.meets()]
    unjudged = [label for label in tallies if label not in judged]
    lines += [
        "",
        f"- meet {TARGET}/{TARGET}: {', '.join(met) or 'none'}",
        f"- miss {TARGET}/{TARGET}: {', '.join(missed) or 'none'}",
    ]
    if unjudged:
        lines.append(f"- no gold span and no finding (not measured): {', '.join(unjudged)}")
    return "\n".join(lines)


def render_examples(tallies: Mapping[str, Tally], limit: int = 5) -> str:
    """The first few false positives and misses per label, so a detector can be fixed."""
    lines: list[str] = []
    for label, t in tallies.items():
        for kind, texts in (("false positive", t.false_positive_texts), ("missed", t.missed_texts)):
            lines += [f"- {label} {kind}: {text}" for text in texts[:limit]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--secrets", type=Path, default=SECRETS_CORPUS)
    parser.add_argument(
        "--examples", type=int, default=0, metavar="N", help="list N false positives and misses"
    )
    args = parser.parse_args(argv)
    scanner = default_scanner()
    secret_ids = [d.id for d in BUILTIN if d.category == Category.SECRET]
    presidio = measure_presidio(scanner, load_presidio(args.dataset))
    secrets = measure_secrets(scanner, load_secrets(args.secrets), secret_ids)
    report = "\n\n".join(
        [
            "## DLP accuracy",
            render_table(f"presidio synthetic set ({args.dataset.name})", presidio),
            f"Checksummed and rule-validated types (target {TARGET}/{TARGET}): "
            + ", ".join(
                f"{label} {'met' if presidio[label].meets() else 'MISSED'}"
                for label in sorted(CHECKSUMMED)
            ),
            render_table(f"secrets corpus ({args.secrets.name})", secrets),
        ]
    )
    if args.examples:
        report += "\n\n### Examples\n\n" + render_examples({**presidio, **secrets}, args.examples)
    print(report)
    RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULT_FILE.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
