"""`agentwatch dlp scan`: print findings for files or stdin, and fail CI on a severity."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentwatch.dlp.detectors import BY_ID
from agentwatch.dlp.engine import default_scanner
from agentwatch.dlp.policy import DlpPolicy, PolicyError, load_policy
from agentwatch.dlp.types import Finding, Severity

SEVERITY_NAMES = [s.name.lower() for s in Severity]


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="files to scan; '-' or none: stdin"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--fail-on", choices=SEVERITY_NAMES, default=None,
        help="exit 1 when any finding is at or above this severity",
    )  # fmt: skip
    parser.add_argument("--config", type=Path, default=None, help="apply the config's dlp: policy")


def run_scan(args: argparse.Namespace) -> int:
    """Scan every input; the exit code is 1 when --fail-on is met, 2 on bad input."""
    try:
        policy = load_policy(args.config) if args.config else DlpPolicy()
    except PolicyError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 2
    threshold = Severity[args.fail_on.upper()] if args.fail_on else None
    failed = False
    for name in args.files or ["-"]:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(errors="replace")
        except OSError as exc:
            print(f"agentwatch: {name}: {exc.strerror}", file=sys.stderr)
            return 2
        findings = [
            (f, action)
            for f in default_scanner().scan(text)
            if (action := policy.action_for(BY_ID[f.detector])) != "off"
        ]
        if threshold is not None and any(f.severity >= threshold for f, _ in findings):
            failed = True
        if args.format == "json":
            print(json.dumps({"input": name, "findings": [_as_json(f, a) for f, a in findings]}))
        else:
            for finding, action in findings:
                print(_as_text(name, text, finding, action))
    return 1 if failed else 0


def _as_json(finding: Finding, action: str) -> dict[str, object]:
    return {
        "detector": finding.detector,
        "category": finding.category.value,
        "severity": finding.severity.name.lower(),
        "start": finding.start,
        "end": finding.end,
        "confidence": finding.confidence,
        "action": action,
    }


def _as_text(name: str, text: str, finding: Finding, action: str) -> str:
    line = text.count("\n", 0, finding.start) + 1
    column = finding.start - (text.rfind("\n", 0, finding.start) + 1) + 1
    return (
        f"{name}:{line}:{column} {finding.detector} {finding.category.value} "
        f"{finding.severity.name.lower()} {action} {_mask(text[finding.start : finding.end])}"
    )


def _mask(value: str) -> str:
    """The first and last two characters at most, so a log of the scan leaks nothing useful."""
    value = value.replace("\n", " ")
    if len(value) <= 8:
        return "*" * len(value)
    return f"{value[:2]}{'*' * min(len(value) - 4, 12)}{value[-2:]}"
