"""Every message catalogue is complete in both languages: the same keys, the same {placeholders}, no empty
text, Chinese that is Chinese; every key the code and the pages name exists; and no text a person reads
uses our internal words ("founding document")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pomona import knowledge
from pomona.cli.simulate import MESSAGES as SIMULATE_MESSAGES
from pomona.i18n import LANGS, catalogue

SRC = Path(__file__).resolve().parents[2] / "src" / "pomona"
TEMPLATES = SRC / "http" / "templates"

FIELDS = re.compile(r"\{(\w*)[^{}]*\}")
CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# What may stay Latin in a Chinese text: {placeholders}, `commands`, URLs, paths and option names.
NOT_PROSE = re.compile(r"\{[^{}]*\}|`[^`]*`|https?://\S+|--[\w-]+|\S*/\S*")
ENGLISH_PHRASE = re.compile(r"\b[A-Za-z][a-z]+\s+[a-z]{2,}\b")
# Chinese entries that are rightly not Chinese: the language switch names the other language.
NOT_CHINESE = {"portal.lang.switch"}
INTERNAL_WORDS = re.compile(r"founding[ -]document|创始文档|奠基文档", re.IGNORECASE)


def english_prose(text: str) -> str | None:
    """The first English phrase (two words in a row) in ``text``, codes, commands, URLs and paths aside."""
    m = ENGLISH_PHRASE.search(NOT_PROSE.sub(" ", text))
    return m.group(0) if m else None


def reads_as_chinese(text: str) -> bool:
    """Chinese text, or a text with no English phrase in it (a code, a command, a format)."""
    return bool(CJK.search(text)) or english_prose(text) is None


def knowledge_texts(lang: str) -> dict[str, str]:
    """Every text of the knowledge base in ``lang``, as {"CODE.field[i]": text}."""
    out: dict[str, str] = {}
    for code, e in knowledge._texts(lang).items():
        out[f"{code}.title"] = e.title
        out[f"{code}.cause"] = e.cause
        for name in ("steps", "proves", "rules_out", "device_checks"):
            for i, s in enumerate(getattr(e, name)):
                out[f"{code}.{name}[{i}]"] = s
    return out


def simulate_texts(lang: str) -> dict[str, str]:
    return {k: v[lang] for k, v in SIMULATE_MESSAGES.items() if lang in v}


CATALOGUES = {
    "i18n": lambda lang: dict(catalogue(lang)),
    "knowledge": knowledge_texts,
    "simulate": simulate_texts,
}


def literal_keys() -> dict[str, str]:
    """Every catalogue key named as a literal in the code ({key: where}): t("..."), translate(lang,
    "..."), msg("..."), _("...") in templates."""
    calls = {"t": 0, "msg": 0, "_t": 0, "translate": 1, "_": 0}
    found: dict[str, str] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in calls or len(node.args) <= calls[name]:
                continue
            arg = node.args[calls[name]]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and "." in arg.value:
                found.setdefault(arg.value, f"{path.relative_to(SRC)}:{node.lineno}")
    for path in TEMPLATES.rglob("*.html"):
        for m in re.finditer(r"""_\(\s*["']([\w.-]+)["']""", path.read_text("utf-8")):
            found.setdefault(m.group(1), str(path.relative_to(SRC)))
    return found


class TestSameKeys:
    @pytest.mark.parametrize("name", CATALOGUES)
    def test_every_key_in_every_language(self, name: str) -> None:
        """Each catalogue has the same keys in en and zh-CN; the test names a missing key."""
        en, zh = CATALOGUES[name]("en"), CATALOGUES[name]("zh-CN")
        assert not sorted(set(en) - set(zh)), f"{name}: missing in zh-CN: {sorted(set(en) - set(zh))}"
        assert not sorted(set(zh) - set(en)), f"{name}: missing in en: {sorted(set(zh) - set(en))}"

    @pytest.mark.parametrize("name", CATALOGUES)
    def test_same_placeholders(self, name: str) -> None:
        """Each text names the same {placeholders} in both languages."""
        en, zh = CATALOGUES[name]("en"), CATALOGUES[name]("zh-CN")
        bad = [k for k in en if k in zh and set(FIELDS.findall(en[k])) != set(FIELDS.findall(zh[k]))]
        assert not bad, f"{name}: placeholders differ: {bad}"

    @pytest.mark.parametrize("lang", LANGS)
    @pytest.mark.parametrize("name", CATALOGUES)
    def test_no_empty_text(self, name: str, lang: str) -> None:
        """No text is empty."""
        empty = [k for k, v in CATALOGUES[name](lang).items() if not v.strip()]
        assert not empty, f"{name} {lang}: empty: {empty}"

    @pytest.mark.parametrize("name", CATALOGUES)
    def test_chinese_is_chinese(self, name: str) -> None:
        """A zh-CN text is written in Chinese, unless it is a pure code, command, URL or format."""
        zh = CATALOGUES[name]("zh-CN")
        bad = {k: v for k, v in zh.items() if k not in NOT_CHINESE and not reads_as_chinese(v)}
        assert not bad, f"{name}: zh-CN text in English: {bad}"

    def test_the_checker_finds_english(self) -> None:
        """The Chinese check catches an English sentence and lets codes, commands and formats pass."""
        assert not reads_as_chinese("no user ana@acme.example in tenant acme")
        assert reads_as_chinese("租户 acme 中没有用户 ana@acme.example")
        assert reads_as_chinese("{title}：{detail}") and reads_as_chinese("UPN")
        assert reads_as_chinese("`pomona licence set --tenant acme --seats 10`")


class TestKeysTheCodeNames:
    def test_every_literal_key_exists(self) -> None:
        """Every key the code or a page template names literally is in both i18n catalogues."""
        en, zh = catalogue("en"), catalogue("zh-CN")
        simulate = set(SIMULATE_MESSAGES)
        missing = {
            k: where
            for k, where in literal_keys().items()
            if re.fullmatch(r"[a-z][\w-]*(\.[\w-]+)+", k)
            and k not in simulate
            and not (k in en and k in zh)
            and not k.startswith(("pomona.", "http.", "uvicorn."))  # logger and module names
        }
        assert not missing, f"keys named in the code but not in the catalogues: {missing}"

    def test_every_message_is_given_its_values(self) -> None:
        """Each msg("key", ...) in the code gives exactly the values its text names, in both languages (a
        missing one would fail at the raise site, hiding the refusal behind a KeyError)."""
        bad = []
        for path in SRC.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "msg"):
                    continue
                key = node.args[0]
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    continue
                given = {k.arg for k in node.keywords if k.arg}
                for lang in LANGS:
                    named = set(FIELDS.findall(catalogue(lang).get(key.value, "")))
                    if named != given:
                        bad.append((f"{path.relative_to(SRC)}:{node.lineno}", key.value, lang, named, given))
        assert not bad, bad

    def test_the_key_walk_finds_keys(self) -> None:
        """The walk over the code finds the keys it must (errors, templates, the CLI)."""
        keys = literal_keys()
        assert {"error.tenant.not_found", "portal.devices.title", "cli.explain.count"} <= set(keys)


class TestNoInternalWords:
    @pytest.mark.parametrize("lang", LANGS)
    @pytest.mark.parametrize("name", CATALOGUES)
    def test_no_founding_document(self, name: str, lang: str) -> None:
        """No text a person reads says "founding document": it is our word, not theirs."""
        bad = {k: v for k, v in CATALOGUES[name](lang).items() if INTERNAL_WORDS.search(v)}
        assert not bad, f"{name} {lang}: {bad}"

    def test_nor_the_docs_and_the_cli_help(self) -> None:
        """Nor do the docs an admin reads, nor any command's help."""
        import click

        from pomona.cli.main import main

        root = SRC.parents[1]
        texts = {
            str(p.relative_to(root)): p.read_text("utf-8")
            for p in [root / "README.md", *root.glob("docs/*.md")]
        }

        def walk(cmd: click.Command, path: str) -> None:
            texts[path] = " ".join([cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)])
            for name, sub in getattr(cmd, "commands", {}).items():
                walk(sub, f"{path} {name}")

        walk(main, "pomona")
        assert len(texts) > 50
        assert not [k for k, v in texts.items() if INTERNAL_WORDS.search(v)]

    def test_nor_the_known_messages(self) -> None:
        """The known device messages (what diagnose quotes back) do not either."""
        for m in knowledge.messages():
            for lang in LANGS:
                assert not any(INTERNAL_WORDS.search(w) for w in m.wording[lang]), m.id
