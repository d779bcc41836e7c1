"""The scanner: a Hyperscan prefilter picks the rules and windows, then the rules run there."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from agentwatch.dlp.prefilter import Prefilter, RuleKey, Window, matches_in
from agentwatch.dlp.types import Category, Detector, Finding


class Scanner:
    """Finds sensitive data in text with a fixed set of detectors; safe to share."""

    def __init__(self, detectors: Sequence[Detector] | None = None) -> None:
        if detectors is None:
            from agentwatch.dlp.detectors import BUILTIN

            detectors = BUILTIN
        self.detectors: tuple[Detector, ...] = tuple(detectors)
        self._prefilter = Prefilter(self.detectors)

    def scan(self, text: str, *, min_confidence: float = 0.0) -> list[Finding]:
        """Findings sorted by start; overlaps resolved to the most confident, then longest."""
        if not text:
            return []
        plan = self._prefilter.windows(text)
        return self._scan(text, plan, min_confidence) if plan else []

    def scan_unfiltered(self, text: str, *, min_confidence: float = 0.0) -> list[Finding]:
        """What `scan` must find: every rule of every detector run over the whole text."""
        if not text:
            return []
        whole = [(0, len(text))]
        plan = {
            (index, number): whole
            for index, detector in enumerate(self.detectors)
            for number in range(len(detector.rules))
        }
        return self._scan(text, plan, min_confidence)

    def _scan(
        self, text: str, plan: Mapping[RuleKey, list[Window]], min_confidence: float
    ) -> list[Finding]:
        by_detector: dict[int, list[list[Window] | None]] = {}
        for (index, number), windows in plan.items():
            rule_windows = by_detector.get(index)
            if rule_windows is None:
                rule_windows = by_detector[index] = [None] * len(self.detectors[index].rules)
            rule_windows[number] = windows
        findings: list[Finding] = []
        # Detector and rule order decide which of two equally good findings is kept.
        for index in sorted(by_detector):
            _run(self.detectors[index], text, by_detector[index], findings)
        kept = [f for f in findings if f.confidence >= min_confidence]
        return _resolve_overlaps(kept)


def _run(
    detector: Detector,
    text: str,
    rule_windows: Sequence[list[Window] | None],
    out: list[Finding],
) -> None:
    seen: set[tuple[int, int]] = set()
    for rule, windows in zip(detector.rules, rule_windows, strict=True):
        if not windows:
            continue
        has_value = "value" in rule.regex.groupindex
        for window in windows:
            for match in matches_in(rule.regex, text, window):
                start, end = match.span("value") if has_value else match.span()
                if (start, end) in seen:
                    continue
                value = text[start:end]
                if detector.validator is not None and not detector.validator(value):
                    continue
                confidence = _with_context(
                    detector, rule.confidence, rule.needs_context, text, match.start(), match.end()
                )
                if confidence is None:
                    continue
                seen.add((start, end))
                out.append(
                    Finding(
                        detector.id,
                        detector.category,
                        detector.severity,
                        start,
                        end,
                        round(confidence, 3),
                    )
                )


def _with_context(
    detector: Detector, base: float, needs_context: bool, text: str, start: int, end: int
) -> float | None:
    if not detector.context_raise and not detector.context_lower:
        return None if needs_context else base
    reach = detector.context_window
    around = (text[max(start - reach, 0) : start] + " " + text[end : end + reach]).lower()
    raised = any(word in around for word in detector.context_raise)
    if needs_context and not raised:
        return None
    confidence = base
    if raised:
        confidence = min(1.0, confidence + 0.1)
    if any(word in around for word in detector.context_lower):
        confidence -= 0.3
    return max(confidence, 0.0)


def _priority(finding: Finding) -> tuple[float, int, int]:
    return (finding.confidence, finding.severity, finding.end - finding.start)


def _resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings; injection findings stand on their own."""
    kept: list[Finding] = []
    for finding in sorted(findings, key=_priority, reverse=True):
        if finding.category is not Category.INJECTION and any(
            other.category is not Category.INJECTION
            and finding.start < other.end
            and other.start < finding.end
            for other in kept
        ):
            continue
        kept.append(finding)
    return sorted(kept, key=lambda f: (f.start, f.end))


@functools.cache
def default_scanner() -> Scanner:
    """The scanner with every built-in detector, built on first use."""
    return Scanner()
