"""Secret detectors: provider API keys, tokens, private keys, credentials in URLs and config."""

from __future__ import annotations

import re

from agentwatch.dlp import validators as v
from agentwatch.dlp.types import Category, Detector, Gate, Rule, Severity, Validator

_S = Category.SECRET
_NAMES = ("secret", "token", "key", "passw", "pwd", "auth", "credential", "private", "bearer")
# Generic detectors (a secret's name, or randomness) score below every provider-specific one,
# so when both claim a value the specific detector's id is the one reported.
_GENERIC = 0.8
_CRC32 = "CRC32 checksum (entropy for other formats)"
# Names of digests that end in "key" (cache_key, hash-key, sha256key): hex there is no secret.
_NOT_DIGEST_KEY = "".join(
    f"(?<!{word}key)(?<!{word}.key)"
    for word in ("cache", "hash", "digest", "checksum", "etag", "commit", "md5", "sha1", "sha256")
)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _key(
    id_: str,
    pattern: str,
    keywords: tuple[str, ...],
    *,
    severity: Severity = Severity.CRITICAL,
    action: str = "block",
    confidence: float = 0.97,
    gate: Gate = Gate.KEYWORDS,
    validator: Validator = v.looks_random,
    validator_name: str = "entropy + not a placeholder",
) -> Detector:
    """A prefix-led token: the prefix is the keyword, the rest must look random (or check)."""
    return Detector(
        id_,
        _S,
        severity,
        "block" if action == "block" else "log",
        (Rule(_rx(pattern), confidence),),
        gate=gate,
        keywords=keywords,
        validator=validator,
        validator_name=validator_name,
        window=320,
    )


SECRETS: tuple[Detector, ...] = (
    _key("openai_api_key",
         r"(?<![\w-])sk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,200}(?![\w-])",
         ("sk-",)),
    _key("anthropic_api_key", r"(?<![\w-])sk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_-]{32,200}",
         ("sk-ant-",), confidence=0.99),
    _key("aws_access_key_id",
         r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}"
         r"(?![A-Za-z0-9])",
         ("akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "apka"),
         confidence=0.95),
    Detector(
        "aws_secret_access_key", _S, Severity.CRITICAL, "block",
        (Rule(_rx(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), 0.9,
              needs_context=True),),
        keywords=("aws", "secret"), validator=v.aws_secret_valid, validator_name="entropy, not hex",
        context_raise=("aws", "secret"), context_window=80, window=200,
    ),
    _key("github_token",
         r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,251})(?!\w)",
         ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), confidence=0.99,
         validator=v.crc32_token_valid, validator_name=_CRC32),
    _key("gitlab_token", r"(?<!\w)gl(?:pat|dt|rt|ptt|oas)-[A-Za-z0-9_-]{20,64}(?![\w-])",
         ("glpat-", "gldt-", "glrt-", "glptt-", "gloas-"), confidence=0.98),
    _key("slack_token", r"(?<!\w)(?:xox[abposr]|xapp)-[A-Za-z0-9-]{10,250}(?![\w-])",
         ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxr-", "xoxs-", "xapp-"), confidence=0.97),
    _key("slack_webhook",
         r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,200}",
         ("hooks.slack.com",), severity=Severity.HIGH, confidence=0.98),
    _key("stripe_key", r"(?<!\w)(?:sk|rk)_live_[A-Za-z0-9]{16,247}(?!\w)", ("_live_",),
         confidence=0.98),
    _key("stripe_test_key", r"(?<!\w)(?:sk|rk)_test_[A-Za-z0-9]{16,247}(?!\w)", ("_test_",),
         severity=Severity.LOW, action="log", confidence=0.9),
    _key("stripe_publishable_key", r"(?<!\w)pk_live_[A-Za-z0-9]{16,247}(?!\w)", ("pk_live_",),
         severity=Severity.LOW, action="log", confidence=0.9),
    _key("google_api_key", r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])", ("aiza",),
         severity=Severity.HIGH, confidence=0.97),
    Detector(
        "azure_storage_key", _S, Severity.CRITICAL, "block",
        # A storage account key is 64 random bytes in base64: 86 characters and "==".
        (Rule(_rx(r"(?i:AccountKey)=(?P<value>[A-Za-z0-9+/]{86}==)"), 0.98),
         Rule(_rx(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])"), 0.9,
              needs_context=True)),
        keywords=("accountkey", "account_key", "azure", "storage"), validator=v.looks_random,
        validator_name="entropy", context_raise=("azure", "accountkey", "account_key", "storage"),
        context_window=60,
    ),
    _key("twilio_key", r"(?<![A-Za-z0-9])(?:SK|AC)[0-9a-f]{32}(?![A-Za-z0-9])", (),
         severity=Severity.HIGH, confidence=0.85, gate=Gate.ALWAYS),
    _key("sendgrid_key", r"(?<!\w)SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![\w-])", ("sg.",),
         confidence=0.99),
    _key("npm_token", r"(?<!\w)npm_[A-Za-z0-9]{36}(?!\w)", ("npm_",), severity=Severity.HIGH,
         validator=v.crc32_token_valid, validator_name=_CRC32),
    _key("pypi_token", r"(?<![\w-])pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
         ("pypi-ageichlwas5vcmc",),
         severity=Severity.HIGH, confidence=0.99),
    _key("huggingface_token", r"(?<!\w)hf_[A-Za-z0-9]{34,40}(?!\w)", ("hf_",),
         severity=Severity.HIGH, confidence=0.9),
    Detector(
        "jwt", _S, Severity.HIGH, "redact",
        (Rule(_rx(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
              0.95),),
        keywords=("eyj",), validator=v.jwt_valid, validator_name="header decodes to JSON with alg",
        window=2048,
    ),
    Detector(
        "private_key", _S, Severity.CRITICAL, "block",
        (Rule(_rx(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]{16,16000}?"
                  r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"), 0.99),
         Rule(_rx(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----\s*[A-Za-z0-9+/=\s]{32,}"),
              0.9)),
        keywords=("private key-----", "private key block-----"), window=16400,
    ),
    Detector(
        "db_connection_string", _S, Severity.CRITICAL, "block",
        (Rule(_rx(r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql"
                  r"|sqlserver|clickhouse)(?:\+\w+)?://[^\s:/@'\"]*:(?P<value>[^\s@/'\"]+)@"
                  r"[^\s'\"<>]+"), 0.95),),
        keywords=("postgres", "mysql", "mariadb", "mongodb", "redis", "amqp", "mssql",
                  "sqlserver", "clickhouse"),
        validator=v.not_placeholder, validator_name="password is not a placeholder", window=512,
    ),
    Detector(
        "url_credentials", _S, Severity.HIGH, "block",
        (Rule(_rx(r"(?i)\b(?:https?|ftp|smtp|ssh)://[^\s:/@'\"]+:(?P<value>[^\s@/'\"]+)@[\w.-]+"),
              0.9),),
        keywords=("@",), validator=v.not_placeholder,
        validator_name="password is not a placeholder",
    ),
    Detector(
        "password_assignment", _S, Severity.HIGH, "redact",
        (Rule(_rx(r"(?i)(?:passw(?:or)?d|pwd|pass|secret|api[_-]?key|auth[_-]?token|"
                  r"access[_-]?token|client[_-]?secret|secret[_-]?key|private[_-]?key)\w*[\"']?"
                  r"[ \t]*(?:=|:|=>|:=)[ \t]*[\"'`]?(?P<value>[^\s\"'`,;]{4,200})"), _GENERIC),),
        keywords=("pass", "pwd", "secret", "api_key", "apikey", "api-key", "token", "private_key",
                  "private-key", "privatekey"),
        gate=Gate.PATTERN, validator=v.assigned_secret_valid,
        validator_name="value is not a placeholder or code; checksum holds",
    ),
    Detector(
        "high_entropy_secret", _S, Severity.MEDIUM, "redact",
        # A random token near a secret's name; hex only when assigned to a secret's name
        # (not a digest's), as git SHAs and checksums are hex too.
        (Rule(_rx(r"(?<![\w+/-])(?![0-9a-fA-F]{20,200}(?![\w+/=-]))[A-Za-z0-9+/_-]{20,200}={0,2}"
                  r"(?![\w+/=-])"), _GENERIC - 0.15, needs_context=True,
              anchor=r"[A-Za-z0-9+/_-]{20}"),
         Rule(_rx(r"[KkTtSsPp](?i:(?<=k)ey" + _NOT_DIGEST_KEY + r"|(?<=t)oken|(?<=s)ecret"
                  r"|(?<=p)wd|(?<=p)assw\w*)[\"']?[ \t]*(?:=|:|=>|:=)[ \t]*[\"'`]?"
                  r"(?P<value>[0-9a-fA-F]{32,128})(?![\w+/=-])"), _GENERIC - 0.1)),
        keywords=_NAMES, gate=Gate.PATTERN, validator=v.high_entropy_secret,
        validator_name="entropy; hex only assigned to a secret's name; not a UUID",
        context_raise=_NAMES, context_window=48, window=256,
    ),
)  # fmt: skip
