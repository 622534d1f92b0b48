"""User-facing text in English and Simplified Chinese.

Catalogues are data (``<lang>.json`` beside this file), keyed by message id. The language comes from
an explicit argument, else the process's language: what the command line set from its settings
(``POMONA_LANG``, else ``LC_ALL``/``LANG``; see pomona.settings), else English.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LANGS = ("en", "zh-CN")
_DIR = Path(__file__).parent

_process_lang: str | None = None


def set_process_lang(lang: str | None) -> str | None:
    """Set the language used when none is given (the CLI does, from its settings); returns the previous one."""
    global _process_lang
    previous, _process_lang = _process_lang, lang
    return previous


def detect_lang(explicit: str | None = None) -> str:
    value = explicit or _process_lang
    if value:
        return "zh-CN" if value.lower().startswith("zh") else "en"
    return "en"


@cache
def catalogue(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((_DIR / f"{lang}.json").read_text("utf-8"))
    return data


def t(msg_id: str, lang: str | None = None, **values: object) -> str:
    """The message in the chosen language (falling back to English), with ``{name}`` fields filled."""
    lang = detect_lang(lang)
    text = catalogue(lang).get(msg_id) or catalogue("en").get(msg_id) or msg_id
    return text.format(**values) if values else text


class Msg(str):
    """A catalogue message rendered in English (the string itself: logs, events, the English surfaces)
    that keeps its key and values, so a surface can render it again in its reader's language.

    Raise sites give errors one: ``NotFoundError(msg("error.user.not_found", upn=upn, tenant=name))``;
    ``domain.errors.describe`` passes the key and values on, and each surface renders them."""

    key: str
    params: dict[str, object]

    def __new__(cls, key: str, params: dict[str, object]) -> Msg:
        self = super().__new__(cls, t(key, "en", **params))
        self.key = key
        self.params = params
        return self

    def __reduce__(self) -> tuple[object, ...]:
        return (Msg, (self.key, self.params))


def msg(key: str, /, **params: object) -> Msg:
    """The message ``key`` with its values: English as a string; ``presenters.render`` in any language."""
    return Msg(key, params)
