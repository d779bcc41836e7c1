"""`agentwatch dlp scan` through a real subprocess: JSON lines, exit codes, no leaked values."""

import json
import subprocess
import sys
from pathlib import Path

SECRET = "AKIAQYLPMN5HFIQR7XYZ"
TEXT = f"aws key {SECRET}\nssn 460-89-9847\n"


def scan(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentwatch", "dlp", "scan", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_json_lines_per_input_without_values(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(TEXT)
    result = scan("--format", "json", str(path), "-", stdin="nothing here")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and "460-89-9847" not in result.stdout
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["input"] == str(path) and second == {"input": "-", "findings": []}
    by_id = {f["detector"]: f for f in first["findings"]}
    aws = by_id["aws_access_key_id"]
    assert TEXT[aws["start"] : aws["end"]] == SECRET
    assert (
        aws["severity"] == "critical" and aws["action"] == "block" and aws["category"] == "secret"
    )
    assert by_id["us_ssn"]["action"] == "redact"


def test_fail_on_exit_codes() -> None:
    assert scan("--fail-on", "critical", stdin=TEXT).returncode == 1
    assert scan("--fail-on", "high", stdin="ssn 460-89-9847").returncode == 1
    assert scan("--fail-on", "critical", stdin="ssn 460-89-9847").returncode == 0
    assert scan(stdin=TEXT).returncode == 0


def test_text_output_is_masked() -> None:
    result = scan(stdin=TEXT)
    assert "-:1:9 aws_access_key_id secret critical block" in result.stdout
    assert SECRET not in result.stdout


def test_config_policy_sets_actions_and_off(tmp_path: Path) -> None:
    config = tmp_path / "agentwatch.yaml"
    config.write_text("dlp:\n  default_action: log\n  categories: {secret: redact}\n"
                      "  detectors: {us_ssn: off}\n")  # fmt: skip
    result = scan("--format", "json", "--config", str(config), stdin=TEXT)
    findings = json.loads(result.stdout)["findings"]
    assert [(f["detector"], f["action"]) for f in findings] == [("aws_access_key_id", "redact")]
    config.write_text("dlp:\n  detectors: {no_such: off}\n")
    bad = scan("--config", str(config), stdin=TEXT)
    assert bad.returncode == 2 and "no_such" in bad.stderr
