"""The knowledge base of `pomona diagnose`: what each reason code means, how to fix it, and which codes
can be behind a message a user reports.

The text is data, one file per language beside this module (``en.yaml``, ``zh-CN.yaml``), plus
``messages.yaml`` (language-neutral: the reported messages in both languages, their candidate codes, and
which codes only the device can see). The files are loaded once and cached; nothing here does any other
I/O.

    text_for(code, lang, **facts)   title, cause and numbered resolution, {placeholders} filled
    evidence(code, lang, **facts)   what proves the cause and what rules it out
    fix_commands(code, **facts)     the `pomona ...` commands its resolution names, in order
    device_only(code)               whether only the device can show this cause
    match_message(text)             the known messages a pasted text is, best first, with their codes
    cause(code)                     the enrollment step the cause breaks, its scope, whether the server sees it
    codes()                         every code the knowledge base explains

A fact that is missing (or empty) is shown as ``<name>``: text is always readable, never a KeyError.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

import yaml

__all__ = [
    "LANGS",
    "CodeText",
    "Cause",
    "Evidence",
    "MessageMatch",
    "MessageInfo",
    "cause",
    "codes",
    "device_only",
    "evidence",
    "fix_commands",
    "match_message",
    "messages",
    "text_for",
]

LANGS = ("en", "zh-CN")

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
# A line break inside a folded YAML paragraph becomes a space; between Chinese characters it must vanish.
_WIDE = f"{_CJK}\u2018-\u201f\u3000-\u303f\uff00-\uffef"
_CJK_GAP = re.compile(f"(?<=[{_WIDE}])\\s+(?=[{_WIDE}])")
_WORD = re.compile(r"[a-z0-9]+")
_TOKEN = re.compile(r"[^\s\[\](){}<>:;,=\"'“”‘’/\\|]+")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})
_CONTRACTION = re.compile(r"\b(?:can't|won't)|n't\b")
_CONTRACTIONS = {"can't": "cannot", "won't": "will not"}
_STOP = frozenset(
    {
        "a",
        "an",
        "the",
        "to",
        "of",
        "is",
        "be",
        "has",
        "have",
        "been",
        "for",
        "your",
        "this",
        "if",
        "you",
        "it",
        "in",
        "on",
        "and",
        "or",
    }
)

# Scores: how sure a match is (1.0 = the whole paste is exactly the message or its code).
_MIN_SCORE = 0.45
_MIN_FRAGMENT_WEIGHT = 8  # a fragment must be at least this heavy (Latin letters; a CJK character counts 3)


# -- data classes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeText:
    """One code's text in one language, placeholders filled."""

    code: str
    lang: str
    title: str
    cause: str
    resolution: tuple[str, ...]
    device_only: bool
    device_checks: tuple[str, ...]  # what the user should look at on the device (device-only causes)


@dataclass(frozen=True)
class Evidence:
    """What proves a cause and what rules it out, placeholders filled."""

    proves: tuple[str, ...]
    rules_out: tuple[str, ...]


@dataclass(frozen=True)
class MessageMatch:
    """A known message that the pasted text is (or contains, or is part of)."""

    id: str
    codes: tuple[
        str, ...
    ]  # candidate causes in the source's order (the founding document's, for its messages)
    score: float  # 0..1
    also: tuple[str, ...] = ()  # further causes Pomona can produce behind the same message
    source: str = ""  # seed, contract, device, apple, pomona (a reason code or a portal title)

    @property
    def message_id(self) -> str:
        return self.id


@dataclass(frozen=True)
class MessageInfo:
    """A known message as the data file states it."""

    id: str
    source: str
    codes: tuple[str, ...]
    also: tuple[str, ...]
    keys: tuple[str, ...]
    wording: dict[str, tuple[str, ...]]  # lang -> the texts a user sees


@dataclass(frozen=True)
class Cause:
    """Where a cause breaks an enrollment (causes.yaml): the step, whose fault it is, and whether the
    server records a refusal whenever it stops that step."""

    code: str
    breaks: str  # discovery, portal, profile, install, scep, authenticate, tokenupdate, command, ade, none
    scope: str  # subject, tenant, device, request, none
    seen: bool


# -- loading -----------------------------------------------------------------------------------------------
def _read(name: str) -> Any:
    text = resources.files(__name__).joinpath(name).read_text("utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader


def _clean(text: object) -> str:
    return _CJK_GAP.sub("", " ".join(str(text).split()))


@dataclass(frozen=True)
class _Entry:
    title: str
    cause: str
    steps: tuple[str, ...]
    proves: tuple[str, ...]
    rules_out: tuple[str, ...]
    device_checks: tuple[str, ...]


@cache
def _texts(lang: str) -> dict[str, _Entry]:
    raw = cast(dict[str, dict[str, Any]], _read(f"{lang}.yaml"))
    out: dict[str, _Entry] = {}
    for code, e in raw.items():
        out[code] = _Entry(
            _clean(e["title"]),
            _clean(e["cause"]),
            tuple(_clean(s) for s in e.get("steps") or ()),
            tuple(_clean(s) for s in e.get("proves") or ()),
            tuple(_clean(s) for s in e.get("rules_out") or ()),
            tuple(_clean(s) for s in e.get("device_checks") or ()),
        )
    return out


@cache
def _messages_file() -> tuple[frozenset[str], tuple[MessageInfo, ...]]:
    raw = cast(dict[str, Any], _read("messages.yaml"))
    infos = tuple(
        MessageInfo(
            id=str(m["id"]),
            source=str(m.get("source", "")),
            codes=tuple(str(c) for c in m.get("codes") or ()),
            also=tuple(str(c) for c in m.get("also") or ()),
            keys=tuple(str(k) for k in m.get("keys") or ()),
            wording={lang: tuple(str(w) for w in m.get(lang) or ()) for lang in LANGS},
        )
        for m in raw["messages"]
    )
    return frozenset(str(c) for c in raw.get("device_only") or ()), infos


@cache
def _causes() -> dict[str, Cause]:
    raw = cast(dict[str, dict[str, dict[str, Any]]], _read("causes.yaml"))["causes"]
    return {code: Cause(code, str(c["breaks"]), str(c["scope"]), bool(c["seen"])) for code, c in raw.items()}


# -- public look-ups ----------------------------------------------------------------------------------------
def _lang(lang: str | None) -> str:
    return "zh-CN" if lang and lang.replace("_", "-").lower().startswith("zh") else "en"


def _fill(text: str, facts: dict[str, object]) -> str:
    def repl(m: re.Match[str]) -> str:
        value = facts.get(m.group(1))
        return f"<{m.group(1)}>" if value is None or value == "" else str(value)

    return _PLACEHOLDER.sub(repl, text)


def _entry(code: str, lang: str | None) -> _Entry:
    texts = _texts(_lang(lang))
    if str(code) not in texts:
        raise ValueError(f"the knowledge base has no text for {code!r}")
    return texts[str(code)]


def cause(code: str) -> Cause:
    """Where `code` breaks an enrollment; a code causes.yaml does not list breaks nothing."""
    return _causes().get(code) or Cause(code, "none", "none", False)


def codes() -> set[str]:
    """Every code the knowledge base explains (the same in every language)."""
    return set(_texts("en"))


def device_only(code: str) -> bool:
    """Whether only the device can show this cause (the server sees indirect evidence at most)."""
    return str(code) in _messages_file()[0]


def text_for(code: str, lang: str | None = "en", **facts: object) -> CodeText:
    """The code's title, cause and resolution in ``lang`` ("en" or "zh-CN"), with the facts filled in."""
    e = _entry(code, lang)
    return CodeText(
        code=str(code),
        lang=_lang(lang),
        title=_fill(e.title, facts),
        cause=_fill(e.cause, facts),
        resolution=tuple(_fill(s, facts) for s in e.steps),
        device_only=device_only(code),
        device_checks=tuple(_fill(s, facts) for s in e.device_checks),
    )


def evidence(code: str, lang: str | None = "en", **facts: object) -> Evidence:
    """What proves the cause and what rules it out, in ``lang``."""
    e = _entry(code, lang)
    return Evidence(tuple(_fill(s, facts) for s in e.proves), tuple(_fill(s, facts) for s in e.rules_out))


_COMMAND = re.compile(r"`(pomona [^`]+)`")


def fix_commands(code: str, **facts: object) -> tuple[str, ...]:
    """The `pomona ...` commands the code's resolution names, in the order of its steps, with the facts
    filled in (the commands are the same in every language): what a warning or a refusal shows the
    admin as the way to fix it. Empty when the fix is not a command (the user's device, Apple's portal)."""
    e = _entry(code, "en")
    return tuple(_fill(c, facts) for s in e.steps for c in _COMMAND.findall(s))


def messages() -> tuple[MessageInfo, ...]:
    """The known messages, in the data file's order (the founding document's first, in its order)."""
    return _messages_file()[1]


# -- the matcher ------------------------------------------------------------------------------------------
def _nfkc(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return _CONTRACTION.sub(lambda m: _CONTRACTIONS.get(m.group(0), " not"), t) if "'" in t else t


def _compact(text: str) -> str:
    """Letters and digits only: case, punctuation, width and spacing all gone."""
    return "".join(ch for ch in _nfkc(text) if ch.isalnum())


def _weight(compact: str) -> int:
    return sum(3 if _CJK_CHAR.match(ch) else 1 for ch in compact)


def _grams(text: str) -> frozenset[str]:
    """Latin words (without filler words) and CJK character pairs: for reworded or garbled pastes."""
    t = _nfkc(text)
    out = {w for w in _WORD.findall(t) if len(w) > 1 and w not in _STOP}
    cjk = "".join(ch for ch in t if _CJK_CHAR.match(ch))
    out.update(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return frozenset(out)


@dataclass(frozen=True)
class _Variant:
    parts: tuple[str, ...]  # compact text; several parts when the wording has a * (a name in the middle)
    whole: str
    grams: frozenset[str]


@dataclass(frozen=True)
class _Known:
    id: str
    order: int
    source: str
    codes: tuple[str, ...]
    also: tuple[str, ...]
    keys: frozenset[str]  # compact
    variants: tuple[_Variant, ...]


def _variant(text: str) -> _Variant | None:
    parts = tuple(p for p in (_compact(x) for x in _PLACEHOLDER.sub("*", text).split("*")) if p)
    if not parts:
        return None
    return _Variant(parts, "".join(parts), _grams(text.replace("*", " ")))


@cache
def _index() -> tuple[tuple[_Known, ...], dict[str, str]]:
    from pomona.domain.reasons import ReasonCode

    known: list[_Known] = []
    for i, m in enumerate(messages()):
        vs = [_variant(w) for lang in LANGS for w in m.wording[lang]]
        known.append(
            _Known(
                m.id,
                i,
                m.source,
                m.codes,
                m.also,
                frozenset(_compact(k) for k in m.keys),
                tuple(v for v in vs if v is not None),
            )
        )
    reason_tokens = {_compact(c.value): c.value for c in ReasonCode}
    return tuple(known), reason_tokens


def _score_variant(v: _Variant, text: str, weight: int, grams: frozenset[str]) -> float:
    if len(v.parts) == 1:
        whole = v.whole
        if text == whole:
            return 1.0
        if whole in text:
            return 0.9 + 0.1 * len(whole) / len(text)
    else:
        pos = 0
        for p in v.parts:
            pos = text.find(p, pos)
            if pos < 0:
                break
            pos += len(p)
        else:
            return 0.9
    best = 0.0
    if weight >= _MIN_FRAGMENT_WEIGHT:
        for p in v.parts:
            if text in p:
                best = max(best, 0.5 + 0.4 * len(text) / len(v.whole))
    if len(v.grams) >= 3:
        cover = len(v.grams & grams) / len(v.grams)
        if cover >= 0.75:
            best = max(best, 0.6 * cover)
    return best


def match_message(text: str) -> list[MessageMatch]:
    """The known messages ``text`` is, contains or is part of, best first; [] when it is none of them.

    Tolerant of case, punctuation, full-width characters, spacing, fragments, either language, and of
    codes pasted alone (NoEnrollmentPolicy, DeviceCapReached, XPC_TYPE_ERROR, DEVICE_LIMIT_REACHED...).
    """
    known, reason_tokens = _index()
    compact = _compact(text)
    if not compact:
        return []
    weight = _weight(compact)
    grams = _grams(text)
    raw_tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text))
    tokens = [(t, _compact(t)) for t in raw_tokens]
    token_set = {c for _, c in tokens if c}

    found: list[tuple[float, int, str, MessageMatch]] = []  # (score, order, span, match)
    # A Pomona reason code pasted as it is (alone, or inside an API/CLI error line).
    for raw, c in tokens:
        code = reason_tokens.get(c)
        if code and ("_" in raw or raw == code):
            score = 1.0 if token_set == {c} else 0.95
            found.append((score, -1, c, MessageMatch(f"code.{code}", (code,), score, (), "pomona")))
    for k in known:
        best, span = 0.0, ""
        hits = k.keys & token_set
        if hits:
            if token_set <= k.keys:
                best = 1.0
            elif all(h.isdigit() for h in hits):
                best = 0.6
            else:
                best = min(0.95, 0.8 + 0.05 * (len(hits) - 1))
            span = max(hits, key=len)
        for v in k.variants:
            s = _score_variant(v, compact, weight, grams)
            if s > best:
                best, span = s, v.whole
        if best >= _MIN_SCORE:
            found.append((best, k.order, span, MessageMatch(k.id, k.codes, round(best, 3), k.also, k.source)))
    found.sort(key=lambda f: (-f[0], f[1]))
    # A weaker match whose matched words lie inside a stronger match's (e.g. the bare "Profile
    # installation failed" inside the full message) adds nothing: drop it.
    kept: list[tuple[float, int, str, MessageMatch]] = []
    seen: set[str] = set()
    for f in found:
        if f[3].id in seen or any(f[2] and f[2] in g[2] and f[2] != g[2] for g in kept):
            continue
        seen.add(f[3].id)
        kept.append(f)
    return [f[3] for f in kept]
