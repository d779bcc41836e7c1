"""Where each DLP rule can match: one Hyperscan pass over the text finds anchors, and every
anchor hit opens a window that the rule's Python regex then scans.

Windows are sized so that scanning them finds exactly what scanning the whole text would:
every match of a rule has an anchor hit near it (its keyword, its context word, or the rule's
own shape), and the window around that hit reaches past the match's widest possible extent.
"""

from __future__ import annotations

import functools
import re
import re._constants as _sre_constants  # type: ignore[import-not-found]
import re._parser as _sre_parser  # type: ignore[import-not-found]
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import hyperscan

from agentwatch.dlp.types import Detector, Gate

Window = tuple[int, int]
RuleKey = tuple[int, int]  # (detector index, rule index)

_UNBOUNDED = 1 << 20  # widths at or past this count as unbounded
_WHOLE_TEXT = 0.5  # when windows cover more than this share of the text, scan it all once
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
# Python's `\s` also matches the ASCII separators FS, GS, RS and US; Hyperscan's does not.
_SEPARATORS = (b"\x1c", b"\x1d", b"\x1e", b"\x1f")
_SEPARATORS_AS_SPACES = bytes.maketrans(b"".join(_SEPARATORS), b"    ")


def ascii_view(text: str) -> bytes:
    """The text as bytes, one per character, so byte offsets are character offsets.

    Hyperscan matches bytes; each non-ASCII character becomes an ASCII stand-in of its class
    (its ASCII case twin, else "0" for a digit, " " for a space, "a" for a letter, else "?"),
    so that `\\d`, `\\s`, `\\w`, `\\b` and case-insensitive letters see what Python's `re` sees.
    """
    if not text.isascii():
        text = _NON_ASCII_RUN.sub(_stand_ins, text)
    # One C pass whether or not a separator is there: cheaper than looking first.
    return text.encode("ascii").translate(_SEPARATORS_AS_SPACES)


def _stand_ins(run: re.Match[str]) -> str:
    return "".join(map(_stand_in, run.group()))


@functools.lru_cache(maxsize=4096)
def _stand_in(char: str) -> str:
    for folded in (char.lower()[:1], char.upper()[:1]):
        if folded.isascii() and folded.isalpha():
            return folded  # e.g. the Kelvin sign, which `(?i)k` matches
    if char.isdecimal():
        return "0"
    if char.isspace():
        return " "
    if char.isalnum():
        return "a"
    return "?"


@dataclass(frozen=True, slots=True)
class _Group:
    """Anchor expressions whose hits open the same windows for the same rules."""

    expressions: tuple[int, ...]  # indices into the Hyperscan database
    before: int  # the window runs from a hit's end minus `before` ...
    after: int  # ... to its end plus `after`
    rules: tuple[RuleKey, ...]


@dataclass(slots=True)
class _Builder:
    expressions: dict[tuple[str, int], int]
    groups: list[_Group]
    whole_text: list[RuleKey]  # rules with no usable anchor: always scanned in full

    def add(
        self,
        anchors: Sequence[tuple[str, int]],
        before: int,
        after: int,
        rules: tuple[RuleKey, ...],
    ) -> None:
        ids = tuple(
            self.expressions.setdefault(anchor, len(self.expressions)) for anchor in anchors
        )
        self.groups.append(_Group(ids, before, after, rules))


class Prefilter:
    """Decides, for one text, which rules run at all and over which windows."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        builder = _Builder({}, [], [])
        self._non_ascii: list[RuleKey] = []
        for index, detector in enumerate(detectors):
            _plan_detector(index, detector, builder, self._non_ascii)
        self._database, broken = _compile(list(builder.expressions))
        self._groups: list[_Group] = []
        self._whole_text = builder.whole_text
        for group in builder.groups:
            if broken.isdisjoint(group.expressions):
                self._groups.append(group)
            else:
                self._whole_text.extend(group.rules)
        # Expression -> the groups it anchors: a scan then touches only what it hit.
        self._groups_of: list[list[int]] = [[] for _ in builder.expressions]
        for number, group in enumerate(self._groups):
            for expression in group.expressions:
                self._groups_of[expression].append(number)
        self._local = threading.local()

    def windows(self, text: str) -> dict[RuleKey, list[Window]]:
        """The windows each rule must scan in `text`; a rule that is absent cannot match."""
        length = len(text)
        whole = [(0, length)]
        plan: dict[RuleKey, list[Window]] = dict.fromkeys(self._whole_text, whole)
        if not text.isascii():
            plan.update(dict.fromkeys(self._non_ascii, whole))
        if self._database is None:
            return plan
        hits: dict[int, list[int]] = {}
        self._database.scan(
            ascii_view(text), match_event_handler=_collect, context=hits, scratch=self._scratch()
        )
        if not hits:
            return plan
        ends_of: dict[int, list[int]] = {}
        for expression, ends in hits.items():
            for number in self._groups_of[expression]:
                collected = ends_of.get(number)
                if collected is None:
                    ends_of[number] = list(ends)
                else:
                    collected.extend(ends)
        for number, ends in ends_of.items():
            group = self._groups[number]
            ends.sort()
            windows = _merge(ends, group.before, group.after, length)
            for key in group.rules:
                plan[key] = windows
        return plan

    def _scratch(self) -> hyperscan.Scratch:
        # Hyperscan releases the GIL while scanning, so each thread needs its own scratch.
        scratch: hyperscan.Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._database)
        return scratch


def _collect(expression: int, start: int, end: int, flags: int, context: object) -> None:
    """Hyperscan's match callback: the end offsets of each expression's matches."""
    hits: dict[int, list[int]] = context  # type: ignore[assignment]
    found = hits.get(expression)
    if found is None:
        hits[expression] = [end]
    else:
        found.append(end)


def _plan_detector(
    index: int, detector: Detector, builder: _Builder, non_ascii: list[RuleKey]
) -> None:
    keyword_rules: list[int] = []
    context_rules: list[int] = []
    for number, rule in enumerate(detector.rules):
        key = (index, number)
        if detector.gate is Gate.NON_ASCII:
            non_ascii.append(key)
        elif rule.anchor is not None:
            anchor = re.compile(rule.anchor)
            widest, _ = _widths(anchor.pattern, anchor.flags, detector.window)
            longest, ahead = _widths(rule.regex.pattern, rule.regex.flags, detector.window)
            # The anchor's match overlaps or touches the rule's match, anywhere along it.
            builder.add([_expression(anchor)], widest + longest + 1, longest + 1 + ahead, (key,))
        elif rule.needs_context:
            if detector.context_raise:
                context_rules.append(number)
        elif detector.gate is Gate.KEYWORDS:
            if not detector.keywords:
                raise ValueError(f"detector {detector.id} is keyword-gated but has none")
            keyword_rules.append(number)
        else:
            longest, ahead = _widths(rule.regex.pattern, rule.regex.flags, detector.window)
            # The rule's own shape: Hyperscan reports the end of every match it could make.
            builder.add([_expression(rule.regex)], longest, ahead, (key,))
    if keyword_rules:
        _add_words(builder, index, detector, detector.keywords, keyword_rules, reach=0)
    if context_rules:
        _add_words(
            builder,
            index,
            detector,
            detector.context_raise,
            context_rules,
            reach=detector.context_window,
        )


def _add_words(
    builder: _Builder,
    index: int,
    detector: Detector,
    words: Sequence[str],
    numbers: list[int],
    *,
    reach: int,
) -> None:
    """Anchor rules on literal words (any case) found inside a match or within `reach` of it."""
    rules = tuple((index, number) for number in numbers)
    if not all(word.isascii() for word in words):
        builder.whole_text.extend(rules)
        return
    longest = ahead = 0
    for number in numbers:
        regex = detector.rules[number].regex
        rule_longest, rule_ahead = _widths(regex.pattern, regex.flags, detector.window)
        longest, ahead = max(longest, rule_longest), max(ahead, rule_ahead)
    anchors = [(_literal(word), hyperscan.HS_FLAG_CASELESS) for word in words]
    # A context word can sit up to `reach` before the match or after it.  Going back one more
    # match width lets the scan fall in step with a rejected match that straddles the start.
    before = reach + longest + (longest if reach else 0)
    builder.add(anchors, before, reach + longest + ahead, rules)


def _literal(word: str) -> str:
    return "".join(char if char.isalnum() else f"\\x{ord(char):02x}" for char in word)


def _widths(pattern: str, flags: int, fallback: int) -> tuple[int, int]:
    """The longest match of a regex and how far past a match's end it may look.

    Unbounded widths become `fallback` (the detector's window): a longer match can be missed.
    """
    tree = _sre_parser.parse(pattern, flags)
    longest = tree.getwidth()[1]
    ahead = _lookahead(tree) + 1  # one more for `\b` and `$`, which peek at the next character
    return (
        longest if longest < _UNBOUNDED else fallback,
        ahead if ahead < _UNBOUNDED else fallback,
    )


def _lookahead(tree: Any) -> int:
    widest = 0
    for op, argument in tree:
        if op in (_sre_constants.ASSERT, _sre_constants.ASSERT_NOT) and argument[0] == 1:
            widest = max(widest, argument[1].getwidth()[1])
        for child in _subpatterns(argument):
            widest = max(widest, _lookahead(child))
    return widest


def _subpatterns(argument: Any) -> Iterator[Any]:
    if isinstance(argument, _sre_parser.SubPattern):
        yield argument
    elif isinstance(argument, tuple | list):
        for item in argument:
            yield from _subpatterns(item)


# A leading negative lookbehind on one character class, alone or written after the first atom
# (`\\d(?<![\\w-]\\d)`): Hyperscan's prefilter mode drops lookarounds, and without this one a
# digit pattern would report inside every longer run of digits.
_LEADING_LOOKBEHIND = re.compile(
    r"(?P<flags>\(\?[aiLmsux]+\))?"
    r"(?P<atom>\\.|\[(?:\\.|[^\]\\])+\]|[^\\\[(]|)"
    r"\(\?<!\[(?P<excluded>(?!\^)(?:\\.|[^\]\\])+)\](?P=atom)\)"
)

_OPEN_LOWER_BOUND = re.compile(r"(?<!\\)\{,(?=\d*\})")


def _expression(regex: re.Pattern[str]) -> tuple[str, int]:
    """A Python regex as a Hyperscan prefilter expression: it matches wherever `regex` does.

    A leading lookbehind becomes a character that is consumed, which moves no match's end.
    """
    # Python reads `{,n}` as `{0,n}`, Hyperscan as the literal text.
    pattern = _OPEN_LOWER_BOUND.sub("{0,", regex.pattern)
    leading = _LEADING_LOOKBEHIND.match(pattern)
    if leading is not None:
        flags, atom, excluded = leading.group("flags") or "", leading["atom"], leading["excluded"]
        pattern = f"{flags}(?:^|[^{excluded}]){atom}{pattern[leading.end() :]}"
    flags = hyperscan.HS_FLAG_PREFILTER
    if regex.flags & re.IGNORECASE:
        flags |= hyperscan.HS_FLAG_CASELESS
    if regex.flags & re.DOTALL:
        flags |= hyperscan.HS_FLAG_DOTALL
    if regex.flags & re.MULTILINE:
        flags |= hyperscan.HS_FLAG_MULTILINE
    return ("(?x)" if regex.flags & re.VERBOSE else "") + pattern, flags


def _compile(expressions: list[tuple[str, int]]) -> tuple[hyperscan.Database | None, set[int]]:
    """A database of every expression that Hyperscan accepts, and the indices of the others."""
    broken = {i for i, (expression, _) in enumerate(expressions) if not expression.isascii()}
    usable = [i for i in range(len(expressions)) if i not in broken]
    try:
        return _database(expressions, usable), broken
    except hyperscan.error:
        pass  # find the expressions at fault one by one; the rest still go in
    broken.update(i for i in usable if not _compiles(expressions, i))
    usable = [i for i in usable if i not in broken]
    return _database(expressions, usable), broken


def _database(expressions: list[tuple[str, int]], ids: list[int]) -> hyperscan.Database | None:
    if not ids:
        return None
    database = hyperscan.Database()
    database.compile(
        [expressions[i][0].encode("ascii") for i in ids],
        ids=ids,
        flags=[expressions[i][1] for i in ids],
    )
    return database


def _compiles(expressions: list[tuple[str, int]], index: int) -> bool:
    try:
        _database(expressions, [index])
    except hyperscan.error:
        return False
    return True


def _merge(ends: list[int], before: int, after: int, length: int) -> list[Window]:
    """Windows around sorted hit ends, overlapping ones joined, clipped to the text."""
    windows: list[Window] = []
    low, high = ends[0] - before, ends[0] + after
    for end in ends:
        if end - before <= high:
            high = end + after
        else:
            windows.append((max(low, 0), min(high, length)))
            low, high = end - before, end + after
    windows.append((max(low, 0), min(high, length)))
    if sum(hi - lo for lo, hi in windows) > length * _WHOLE_TEXT:
        return [(0, length)]
    return windows


def matches_in(regex: re.Pattern[str], text: str, window: Window) -> Iterator[re.Match[str]]:
    """The matches `regex.finditer(text)` yields that start inside `window`.

    The window's end cuts the text short, which can let a lookahead or `\\b` succeed where the
    real text goes on; each candidate is therefore matched again against the whole text.
    """
    low, high = window
    if low == 0 and high == len(text):
        yield from regex.finditer(text)
        return
    position = low
    while position < high:
        candidate = regex.search(text, position, high)
        if candidate is None:
            return
        start = candidate.start()
        match = regex.match(text, start)
        if match is None:
            position = start + 1
            continue
        yield match
        position = max(match.end(), start + 1)
