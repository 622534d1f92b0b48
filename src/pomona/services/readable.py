"""Facts and evidence as a person reads them: ``label: value`` pairs in the chosen language, never JSON or
a Python repr. The diagnosis, the health findings, the certificate status and the incident checklist
show their details through here; their JSON keeps every field as it is.

A known key has a label (``fact.<key>`` in the message catalogues); another is shown with its
underscores as spaces. Times are ``YYYY-MM-DD HH:MM UTC``; yes/no are words; a list is comma-separated;
a nested mapping is shown the same way, in parentheses.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pomona.i18n import catalogue, detect_lang, t

NONE = "—"
_SKIPPED = ("kind", "id", "code")  # the evidence's kind leads the line; ids and codes are in the JSON


def label(key: str, lang: str | None = None) -> str:
    """A fact's name for people: its catalogue label, else the key with spaces."""
    lang = detect_lang(lang)
    msg = f"fact.{key}"
    return catalogue(lang).get(msg) or catalogue("en").get(msg) or key.replace("_", " ")


def value_text(value: object, lang: str | None = None) -> str:
    """One value for people (see the module's doc)."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return t("fact.yes" if value else "fact.no", lang)
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, str):
        if len(value) >= 16 and value[4:5] == "-" and value[10:11] == "T":
            try:
                return _time(datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                return value
        return value
    if isinstance(value, Mapping):
        return f"({facts_text(value, lang)})"
    if isinstance(value, Sequence):
        return ", ".join(value_text(v, lang) for v in value) or NONE
    return str(value)


def _time(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return f"{value:%Y-%m-%d %H:%M} UTC"


def facts_text(facts: Mapping[str, object], lang: str | None = None, *, skip: Sequence[str] = ()) -> str:
    """``label: value; label: value`` for the facts that have a value (``skip`` leaves keys out)."""
    sep = "；" if detect_lang(lang) == "zh-CN" else "; "
    colon = "：" if detect_lang(lang) == "zh-CN" else ": "
    return sep.join(
        f"{label(k, lang)}{colon}{value_text(v, lang)}"
        for k, v in facts.items()
        if k not in skip and v not in (None, "", [], {})
    )


def evidence_line(e: Mapping[str, object], lang: str | None = None) -> str:
    """One piece of a diagnosis's evidence on one line: what it is, then its facts.

    An event reads as the event log does (time, step, outcome, code, user, device); the policy's dry run
    as its verdict and its message."""
    lang = detect_lang(lang)
    kind = str(e.get("kind") or "")
    name = label(f"evidence_{kind}", lang) if kind else ""
    colon = "：" if lang == "zh-CN" else ": "
    if kind == "event":
        parts = [
            value_text(e.get("at"), lang),
            str(e.get("step") or ""),
            t(f"cli.outcome.{e.get('outcome')}", lang) if e.get("outcome") else "",
            str(e.get("reason") or ""),
            str(e.get("upn") or ""),
            str(e.get("serial") or e.get("udid") or ""),
        ]
        return f"{name}{colon}" + " ".join(p for p in parts if p)
    decision = e.get("decision")
    if kind == "policy" and isinstance(decision, Mapping):
        verdict = decision.get("reason") or t("fact.allowed", lang)
        message = decision.get("message")
        return f"{name}{colon}{verdict}" + (f" — {message}" if message else "")
    rest = facts_text(e, lang, skip=_SKIPPED if kind else ())
    if e.get("code") and kind:
        rest = f"{e['code']}" + (f" ({rest})" if rest else "")
    return f"{name}{colon}{rest}" if name else rest


def wrapped(text: str, cols: int = 80, *, indent: int = 0, first: str = "") -> list[str]:
    """``first`` then ``text`` wrapped to ``cols`` terminal cells, the following
    lines indented by ``indent`` spaces; words are kept whole unless one alone is too long (a CJK text,
    which has no spaces, breaks between any two characters)."""
    lines: list[str] = []
    line = first
    for word, spaced in _tokens(text):
        sep = " " if spaced and line.strip() and line[-1] not in _CLOSING else ""
        if cell_len(line + sep + word) <= cols:
            line += sep + word
            continue
        if line.strip():
            lines.append(line.rstrip())
            line = " " * indent
        for ch in word:  # a word longer than the line: cut it
            if cell_len(line + ch) > cols:
                lines.append(line)
                line = " " * indent
            line += ch
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return lines


def _cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def cell_len(text: str) -> int:
    """The text's width in terminal cells: a wide (CJK) character takes two."""
    return sum(2 if _cjk(ch) else 1 for ch in text)


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Words, each with whether a space came before it; a run of CJK characters splits into single
    characters (a line may end after any of them), closing punctuation stays with what it closes and
    opening punctuation with what it opens."""
    out: list[tuple[str, bool]] = []
    for word in text.split():
        spaced, buf, lead = True, "", ""

        def flush() -> None:
            nonlocal spaced, buf
            if buf:
                out.append((buf, spaced))
                spaced, buf = False, ""

        for ch in word:
            if ch in _CLOSING:
                if buf:
                    buf += ch
                elif out and not spaced:
                    out[-1] = (out[-1][0] + ch, out[-1][1])
                else:
                    buf = ch
            elif ch in _OPENING:
                flush()
                lead += ch
            elif _cjk(ch):
                flush()
                buf = lead + ch
                lead = ""
                flush()
            else:
                buf += lead + ch
                lead = ""
        buf += lead
        flush()
    return out


# Chinese punctuation that closes (kept at the end of a line) and opens (kept at the start of one).
_CLOSING = frozenset("，。；：、！？）」』”’》")
_OPENING = frozenset("（「『“‘《")
