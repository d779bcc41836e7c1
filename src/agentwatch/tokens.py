"""Token counts the gateway makes itself: a request's prompt (budget estimates before a call)
and streamed text (metering a stream the client abandoned).

With an encoding file on disk (`<data dir>/tiktoken/<name>.tiktoken`, or `TIKTOKEN_CACHE_DIR`
as `<name>.tiktoken` or under tiktoken's own cache name) OpenAI models are counted with
tiktoken; anything else is approximated as ceil(UTF-8 bytes / 4) per string. Nothing is ever
downloaded: the files are read here, never through tiktoken's registry or loader, which fetch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import tiktoken

from agentwatch.token_text import PromptText, prompt_text

log = logging.getLogger(__name__)
TOKENS_DIR = "tiktoken"  # under the data directory
BYTES_PER_TOKEN = 4  # OpenAI's rule of thumb for English text
_MEMO_LIMIT = 1024  # model names are client input: the memo of their encodings stays bounded
# tiktoken counts ~25 MB/s (~150 us for a 4 KB prompt): a prompt's first EXACT_BYTES of text are
# counted exactly, the rest at the tokens-per-byte ratio measured on them (~0.7 ms at most).
EXACT_BYTES = 16 * 1024

_O200K = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_PUBLIC = "https://openaipublic.blob.core.windows.net/encodings/"


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """What tiktoken's registry knows about an encoding, minus the download."""

    name: str
    pattern: str
    special_tokens: Mapping[str, int]
    sha256: str  # of the published file; another file is used, with a warning

    @property
    def cache_name(self) -> str:
        """The file name tiktoken gives its download in TIKTOKEN_CACHE_DIR."""
        return hashlib.sha1(f"{_PUBLIC}{self.name}.tiktoken".encode()).hexdigest()


ENCODINGS: dict[str, EncodingSpec] = {
    "o200k_base": EncodingSpec(
        "o200k_base",
        _O200K,
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": EncodingSpec(
        "cl100k_base",
        _CL100K,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
# Which models use which encoding (tiktoken's own table, by prefix); others are approximated.
_O200K_MODELS = re.compile(r"^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|chatgpt-4o|o\d)(\b|-|$)")
_CL100K_MODELS = re.compile(r"^(gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002)")


def encoding_name(model: str) -> str | None:
    """The tiktoken encoding OpenAI uses for `model` (a vendor prefix is ignored)."""
    bare = model.rsplit("/", 1)[-1].lower()
    if _O200K_MODELS.match(bare):
        return "o200k_base"
    if _CL100K_MODELS.match(bare):
        return "cl100k_base"
    return None


def approximate_tokens(text: str) -> int:
    """ceil(UTF-8 bytes / 4): within about 10-30 % of BPE counts for English prose and code;
    it over-counts CJK text, whose characters are 3 bytes but often one token each."""
    return math.ceil(utf8_size(text) / BYTES_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class ModelCounter:
    count: Callable[[str], int]
    exact: bool  # tiktoken; else the approximation


_APPROXIMATE = ModelCounter(approximate_tokens, exact=False)


class TokenCounter:
    """Counts with the encodings it was given, approximates the rest. Immutable once built."""

    def __init__(self, encodings: Mapping[str, tiktoken.Encoding] | None = None) -> None:
        self._encodings = dict(encodings or {})
        self._by_model: dict[str, ModelCounter] = {}

    @classmethod
    def load(cls, data_dir: Path, cache_dir: str | None = None) -> TokenCounter:
        """Every encoding whose file is found on disk; `cache_dir` is TIKTOKEN_CACHE_DIR.
        Reading o200k_base takes about a second: call it at start-up, off the event loop."""
        directories = [data_dir / TOKENS_DIR, *([Path(cache_dir)] if cache_dir else [])]
        encodings: dict[str, tiktoken.Encoding] = {}
        for spec in ENCODINGS.values():
            path = _find_file(spec, directories)
            if path is None:
                continue
            try:
                encodings[spec.name] = _build(spec, path)
            except (OSError, ValueError) as exc:
                log.error("cannot use %s (%s): counting approximately", path, exc)
        missing = sorted(set(ENCODINGS) - set(encodings))
        if missing:
            log.info(
                "no tiktoken file for %s in %s: those models are counted approximately",
                ", ".join(missing),
                " or ".join(str(d) for d in directories),
            )
        return cls(encodings)

    @classmethod
    def from_environment(cls, data_dir: Path) -> TokenCounter:
        return cls.load(data_dir, os.environ.get("TIKTOKEN_CACHE_DIR") or None)

    @property
    def encodings(self) -> tuple[str, ...]:
        return tuple(sorted(self._encodings))

    def counter_for(self, model: str) -> ModelCounter:
        counter = self._by_model.get(model)
        if counter is None:
            encoding = self._encodings.get(encoding_name(model) or "")
            counter = _APPROXIMATE if encoding is None else ModelCounter(_exact(encoding), True)
            if len(self._by_model) < _MEMO_LIMIT:
                self._by_model[model] = counter
        return counter

    def count_text_tokens(self, text: str, model: str) -> int:
        """Exact whatever the length: used off the hot path (a stream's text)."""
        return self.counter_for(model).count(text) if text else 0

    def count_prompt_tokens(self, endpoint: str, payload: Mapping[str, object], model: str) -> int:
        """The tokens a request sends: its texts, plus OpenAI's per-message framing."""
        return count_prompt(prompt_text(endpoint, payload), self.counter_for(model))


def count_prompt(prompt: PromptText, counter: ModelCounter) -> int:
    fixed = prompt.overhead + prompt.given_tokens
    if not counter.exact:
        return fixed + sum(counter.count(text) for text in prompt.texts)
    exact_bytes = exact_tokens = rest_bytes = 0
    for text in prompt.texts:
        size = utf8_size(text)
        room = EXACT_BYTES - exact_bytes
        if room <= 0:
            rest_bytes += size
            continue
        head = text if size <= room else text[:room]  # room characters: at least room bytes
        head_size = size if head is text else utf8_size(head)
        exact_tokens += counter.count(head)
        exact_bytes += head_size
        rest_bytes += size - head_size
    if rest_bytes:
        exact_tokens += math.ceil(rest_bytes * exact_tokens / max(1, exact_bytes))
    return fixed + exact_tokens


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _exact(encoding: tiktoken.Encoding) -> Callable[[str], int]:
    encode = encoding.encode_ordinary  # special-token text in a prompt is ordinary text

    def count(text: str) -> int:
        return len(encode(text))

    return count


def _find_file(spec: EncodingSpec, directories: list[Path]) -> Path | None:
    for directory in directories:
        for name in (f"{spec.name}.tiktoken", spec.cache_name):
            path = directory / name
            if path.is_file():
                return path
    return None


def _build(spec: EncodingSpec, path: Path) -> tiktoken.Encoding:
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        log.warning("%s is not the published %s file: counts follow it as it is", path, spec.name)
    encoding = tiktoken.Encoding(
        spec.name,
        pat_str=spec.pattern,
        mergeable_ranks=read_ranks(data),
        special_tokens=dict(spec.special_tokens),
    )
    log.info("counting %s tokens with %s", spec.name, path)
    return encoding


def read_ranks(data: bytes) -> dict[bytes, int]:
    """A `.tiktoken` file: one base64 token and its rank per line. (tiktoken's own loader
    would also copy the file into its cache directory and fetch any path with `://`.)"""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"line {number} is not '<base64 token> <rank>'") from exc
    if not ranks:
        raise ValueError("no tokens")
    return ranks
