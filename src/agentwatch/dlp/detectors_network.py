"""Contact and network detectors: email, phone numbers, IP and MAC addresses."""

from __future__ import annotations

import re

from agentwatch.dlp import validators as v
from agentwatch.dlp.types import Category, Detector, Gate, Rule, Severity

_SEP = r"[ .-]"
_PHONE_END = r"(?!\w|[.-]\d|:\d)"  # not inside a longer number, a word or a time

NETWORK: tuple[Detector, ...] = (
    Detector(
        "email", Category.PII, Severity.MEDIUM, "redact",
        (Rule(re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
                         r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"),
              0.95),),
        keywords=("@",), context_lower=("git@",), window=320,
    ),
    Detector(
        "phone", Category.PII, Severity.MEDIUM, "redact",
        (
            # E.164 and international: +44 20 7946 0958, +1-202-555-0143, 001-541-754-3010
            Rule(re.compile(rf"(?<![\w+])(?:\+|00)\d{{1,3}}(?:{_SEP}?\(\d{{1,4}}\))?"
                            rf"(?:{_SEP}?\d{{1,5}}){{2,5}}(?:\s?(?:x|ext\.?)\s?\d{{1,5}})?{_PHONE_END}"),
                 0.85),
            # North American: (202) 555-0143, 202-555-0143, 202.555.0143, 1-202-555-0143x123
            Rule(re.compile(rf"(?<![\w+-])(?:1{_SEP})?(?:\(\d{{3}}\) ?|\d{{3}}{_SEP})\d{{3}}{_SEP}"
                            rf"\d{{4}}(?:\s?(?:x|ext\.?)\s?\d{{1,5}})?{_PHONE_END}"), 0.8),
            # National forms with a trunk 0 and at least one separator: 07700 900123,
            # 0490 75 40 81, 06 12 34 56 78, 030 1234567
            Rule(re.compile(rf"(?<![\w+-])(?=0\d*{_SEP}\d)0\d{{1,4}}(?:{_SEP}?\d{{2,4}}){{2,4}}"
                            rf"{_PHONE_END}"), 0.6),
            # Groups of two/three: (37) 788-063, 60-56-85-91, 699 956 915
            Rule(re.compile(r"(?<![\w+-])(?:\(\d{2,3}\) ?\d{3}[ -]\d{3,4}"
                            r"|\d{2}([ .-])\d{2}\1\d{2}\1\d{2}|\d{3} \d{3} \d{3})" + _PHONE_END),
                 0.55),
            # Any other national grouping near a phone word: 467 3395, 78 651 450, (08) 8747 6301
            Rule(re.compile(rf"\d(?<![\w+-]\d)\d{{1,3}}(?:{_SEP}\d{{2,7}}){{1,4}}{_PHONE_END}"),
                 0.5, needs_context=True),
            Rule(re.compile(rf"\((?<![\w+-]\()\d{{2,4}}\) ?\d{{2,4}}(?:{_SEP}\d{{2,7}}){{0,3}}"
                            rf"{_PHONE_END}"), 0.5, needs_context=True),
            # A bare run of digits only right after a phone label: "Fax: 9498777106".  The
            # label's first letter leads (then its rest) so `re` can skip other text quickly.
            Rule(re.compile(r"[PpTtMmCcFfDdWwSs](?<![\w].)(?i:(?<=p)hone|(?<=t)el(?:ephone)?"
                            r"|(?<=m)obile|(?<=c)ell|(?<=f)ax|(?<=d)esk|(?<=w)hatsapp|(?<=s)ms)\b"
                            r"[ \t]*(?i:number|no\.?|#)?[ \t]*[:=]?\s?(?P<value>\d{7,12})"
                            + _PHONE_END), 0.7),
        ),
        gate=Gate.DIGITS, validator=v.phone_valid, validator_name="7-15 digits, not a date",
        # Whole labels and phrases, not bare stems: the words are matched as substrings, and
        # "tel", "call" or "cell" alone would also match hotel, function call or a sheet cell.
        context_raise=("phone", "tel:", "tel.", "telephone", "mobile", "cell:", "cellphone",
                       "cell phone", "fax", "whatsapp", "sms", "contact", "call me", "call us",
                       "reach me", "reach us", "landline", "desk:", "help desk", "helpdesk",
                       "voicemail"),
        context_lower=("order", "invoice", "id:", "version", "ssn", "account", "card", "$", "€"),
    ),
    Detector(
        "ipv4", Category.NETWORK, Severity.LOW, "log",
        (Rule(re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                         r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]|\.\d)"), 0.9),),
        gate=Gate.DIGITS, validator=v.ipv4_valid, validator_name="octets 0-255",
        context_raise=("ip", "address", "host", "server"),
        context_lower=("version", "v.", "release"),
    ),
    Detector(
        "ipv6", Category.NETWORK, Severity.LOW, "log",
        (Rule(re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:|::?)(?:[0-9A-Fa-f]{0,4}:){1,7}"
                         r"[0-9A-Fa-f]{0,4}(?![\w:])"), 0.9),),
        gate=Gate.HEX_COLON, validator=v.ipv6_valid, validator_name="RFC 4291 parse",
    ),
    Detector(
        "mac_address", Category.NETWORK, Severity.LOW, "log",
        (Rule(re.compile(r"(?<![\w:])[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}(?![\w:])"), 0.85),),
        gate=Gate.HEX_COLON, context_raise=("mac", "ether", "hwaddr"),
    ),
)  # fmt: skip
