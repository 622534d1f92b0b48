"""User-facing text in English and Simplified Chinese.

Catalogues are data (``<lang>.json`` beside this file), keyed by message id. The language comes from
an explicit argument, else ``POMONA_LANG``, else ``LANG``/``LC_ALL`` (``zh*`` selects zh-CN).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

LANGS = ("en", "zh-CN")
_DIR = Path(__file__).parent


def detect_lang(explicit: str | None = None) -> str:
    for value in (explicit, os.environ.get("POMONA_LANG"), os.environ.get("LC_ALL"), os.environ.get("LANG")):
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
