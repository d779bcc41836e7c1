"""Prompt-injection heuristics: override phrases, template tokens, hidden unicode, exfil links."""

from __future__ import annotations

import re

from agentwatch.dlp.types import Category, Detector, Gate, Rule, Severity

_I = Category.INJECTION
_OBJECT = r"(?:instructions?|prompts?|rules|directions|guidelines|directives|context|messages?)"

INJECTION: tuple[Detector, ...] = (
    Detector(
        "instruction_override", _I, Severity.MEDIUM, "log",
        (Rule(re.compile(rf"(?i)\b(?:ignore|disregard|forget|override|bypass|skip)\s+"
                         rf"(?:(?:all|any|the|your|my|of|these|those)\s+)*"
                         rf"(?:(?:previous|prior|above|earlier|preceding|system|original|safety)\s+)?"
                         rf"{_OBJECT}\b"), 0.85),
         Rule(re.compile(r"(?i)\b(?:disregard|ignore|forget) (?:everything |all )?"
                         r"(?:the )?above\b"),
              0.8)),
        keywords=("ignore", "disregard", "forget", "override", "bypass", "skip"),
    ),
    Detector(
        "jailbreak_persona", _I, Severity.MEDIUM, "log",
        (Rule(re.compile(r"(?i)\byou are (?:now )?(?:DAN|in developer mode|jailbroken|an? "
                         r"(?:unrestricted|unfiltered|uncensored) (?:ai|assistant|model))\b"
                         r"|\bdo anything now\b|\b(?:enable|enter) developer mode\b"), 0.85),),
        keywords=("you are", "do anything now", "developer mode"),
    ),
    Detector(
        "system_prompt_extraction", _I, Severity.MEDIUM, "log",
        (Rule(re.compile(r"(?i)\b(?:reveal|print|show|repeat|output|leak|tell me)\s+(?:me\s+)?"
                         r"(?:your|the)\s+(?:system prompt|initial instructions|hidden instructions"
                         r"|original instructions)\b"), 0.8),),
        keywords=("system prompt", "instructions"),
    ),
    Detector(
        "chat_template_token", _I, Severity.MEDIUM, "log",
        (Rule(re.compile(r"<\|(?:im_start|im_end|endoftext|system|user|assistant|start_header_id"
                         r"|end_header_id|eot_id|begin_of_text|end_of_text)\|>|\[/?INST\]|<</?SYS>>"),
              0.9),),
        keywords=("<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>"),
    ),
    Detector(
        "unicode_tag_chars", _I, Severity.HIGH, "log",
        (Rule(re.compile("[\U000e0000-\U000e007f]+"), 0.95),), gate=Gate.NON_ASCII,
    ),
    Detector(
        "zero_width_run", _I, Severity.LOW, "log",
        (Rule(re.compile("[\u200b\u200c\u200d\u2060\ufeff]{3,}"), 0.7),), gate=Gate.NON_ASCII,
    ),
    Detector(
        "bidi_override", _I, Severity.MEDIUM, "log",
        (Rule(re.compile("[\u202a-\u202e\u2066-\u2069]"), 0.8),), gate=Gate.NON_ASCII,
    ),
    Detector(
        "markdown_image_exfil", _I, Severity.MEDIUM, "log",
        (Rule(re.compile(r"!\[[^\]\n]{0,200}\]\(\s*https?://[^\s)]*\?[^\s)]*=[^\s)]*\)"), 0.85),),
        keywords=("![",),
    ),
)  # fmt: skip
