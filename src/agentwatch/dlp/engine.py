"""The scanner: a keyword/trigger prefilter picks detectors and windows, then rules run there."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

import ahocorasick  # type: ignore[import-not-found]

from agentwatch.dlp.types import Category, Detector, Finding, Gate

# Cheap triggers: each finds places where a gated detector could match; only windows around
# them are scanned.  Both start with a literal or a tiny class, which `re` searches quickly.
_TRIGGERS: dict[Gate, re.Pattern[str]] = {
    Gate.DIGITS: re.compile(r"\d(?:[ .()/-]{0,2}\d){3,}"),
    Gate.HEX_COLON: re.compile(r":[0-9A-Fa-f]{0,4}:"),
}
_TRIGGER_MARGIN = 40  # characters either side of a trigger hit that gated rules scan
_WHOLE_TEXT = 0.5  # when windows cover more than this share of the text, scan it all once


def _merge(windows: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(windows):
        lo, hi = max(lo, 0), min(hi, length)
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    if sum(hi - lo for lo, hi in merged) > length * _WHOLE_TEXT:
        return [(0, length)]
    return merged


class Scanner:
    """Finds sensitive data in text with a fixed set of detectors; safe to share."""

    def __init__(self, detectors: Sequence[Detector] | None = None) -> None:
        if detectors is None:
            from agentwatch.dlp.detectors import BUILTIN

            detectors = BUILTIN
        self.detectors: tuple[Detector, ...] = tuple(detectors)
        self._automaton = ahocorasick.Automaton()
        keyword_owners: dict[str, list[int]] = {}
        for index, detector in enumerate(self.detectors):
            if detector.gate is Gate.KEYWORDS:
                if not detector.keywords:
                    raise ValueError(f"detector {detector.id} is keyword-gated but has none")
                for keyword in detector.keywords:
                    keyword_owners.setdefault(keyword.lower(), []).append(index)
        for keyword, owners in keyword_owners.items():
            self._automaton.add_word(keyword, (len(keyword), tuple(owners)))
        self._has_keywords = bool(keyword_owners)
        if self._has_keywords:
            self._automaton.make_automaton()
        self._by_gate: dict[Gate, list[int]] = {}
        for index, detector in enumerate(self.detectors):
            self._by_gate.setdefault(detector.gate, []).append(index)

    def scan(self, text: str, *, min_confidence: float = 0.0) -> list[Finding]:
        """Findings sorted by start; overlaps resolved to the most confident, then longest."""
        if not text:
            return []
        length = len(text)
        plan: dict[int, list[tuple[int, int]]] = {}
        if self._has_keywords:
            self._plan_keywords(text, plan)
        for gate, trigger in _TRIGGERS.items():
            owners = self._by_gate.get(gate)
            if not owners:
                continue
            windows = _merge(
                (
                    (m.start() - _TRIGGER_MARGIN, m.end() + _TRIGGER_MARGIN)
                    for m in trigger.finditer(text)
                ),
                length,
            )
            if windows:
                for index in owners:
                    plan[index] = windows
        for index in self._by_gate.get(Gate.ALWAYS, ()):
            plan[index] = [(0, length)]
        if not text.isascii():
            for index in self._by_gate.get(Gate.NON_ASCII, ()):
                plan[index] = [(0, length)]
        findings: list[Finding] = []
        for index, windows in plan.items():
            self._run(self.detectors[index], text, windows, findings)
        kept = [f for f in findings if f.confidence >= min_confidence]
        return _resolve_overlaps(kept)

    def _plan_keywords(self, text: str, plan: dict[int, list[tuple[int, int]]]) -> None:
        lowered = text.lower()
        # Lower-casing can change the length of a few characters (İ); offsets then only say
        # that a keyword occurred, so the whole text is scanned.
        exact = len(lowered) == len(text)
        hits: dict[int, list[tuple[int, int]]] = {}
        for end, (size, owners) in self._automaton.iter(lowered):
            for index in owners:
                hits.setdefault(index, []).append((end + 1 - size, end + 1))
        length = len(text)
        for index, spans in hits.items():
            if not exact:
                plan[index] = [(0, length)]
                continue
            reach = self.detectors[index].window
            plan[index] = _merge(((lo - reach, hi + reach) for lo, hi in spans), length)

    def _run(
        self, detector: Detector, text: str, windows: list[tuple[int, int]], out: list[Finding]
    ) -> None:
        seen: set[tuple[int, int]] = set()
        for rule in detector.rules:
            for lo, hi in windows:
                for match in rule.regex.finditer(text, lo, hi):
                    has_value = "value" in rule.regex.groupindex
                    start, end = match.span("value") if has_value else match.span()
                    if (start, end) in seen:
                        continue
                    value = text[start:end]
                    if detector.validator is not None and not detector.validator(value):
                        continue
                    confidence = _with_context(
                        detector,
                        rule.confidence,
                        rule.needs_context,
                        text,
                        match.start(),
                        match.end(),
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
