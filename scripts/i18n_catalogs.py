"""Helpers for ``make i18n`` that pybabel lacks.

``python scripts/i18n_catalogs.py carry LANG``
    Before ``pybabel update``: a new message whose text equals a translated one except for the
    names of its ``{fields}`` (a variable renamed at a raise site: ``{config_min_island_mm3}`` ->
    ``{cfg_min_island_mm3}``) gets that translation with the fields renamed, instead of none.
``python scripts/i18n_catalogs.py fill-en``
    English is printpipe's source language: every empty msgstr of the ``en`` catalog becomes its
    msgid (a message with a deliberate English wording keeps the one it has).
``python scripts/i18n_catalogs.py compile``
    Write each ``.mo`` from its ``.po`` (fuzzy entries left out). ``pybabel compile`` would do the
    same but fails on messages such as "80 % of the nozzle" or "15% infill", which its
    ``python-format`` check reads as ``%`` conversions (``% o``, ``% i``) the translation lacks;
    printpipe's messages use ``{fields}``, checked by tests/test_i18n.py instead.
``python scripts/i18n_catalogs.py missing [LANG]``
    List the messages of LANG's catalog (default zh) that have no translation yet, or fuzzy ones;
    exit 1 when there are any.
``python scripts/i18n_catalogs.py apply LANG FILE.json``
    Merge ``{msgid: msgstr}`` from a JSON file into LANG's catalog (for batch translation).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "printpipe" / "locale"


def _po(lang: str) -> Path:
    return LOCALE / lang / "LC_MESSAGES" / "printpipe.po"


def _load(lang: str):
    with _po(lang).open("rb") as fh:
        return read_po(fh, locale=lang)


def _save(lang: str, catalog) -> None:
    tmp = _po(lang).with_suffix(".po.tmp")
    with tmp.open("wb") as fh:
        write_po(fh, catalog, width=100, include_lineno=False)
    tmp.replace(_po(lang))


def _empty(msg) -> bool:
    if isinstance(msg.string, (tuple, list)):
        return not all(msg.string)
    return not msg.string


FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def carry(lang: str) -> int:
    with (LOCALE / "printpipe.pot").open("rb") as fh:
        template = read_po(fh)
    cat = _load(lang)
    have = {(m.context, m.id): m for m in cat if isinstance(m.id, str) and m.id and m.string and not m.fuzzy}
    by_skeleton: dict = {}
    for m in have.values():
        by_skeleton.setdefault((m.context, FIELD.sub("{}", m.id)), []).append(m)
    n = 0
    for msg in template:
        if not isinstance(msg.id, str) or not msg.id or (msg.context, msg.id) in have:
            continue
        found = by_skeleton.get((msg.context, FIELD.sub("{}", msg.id)), [])
        if len(found) != 1:
            continue  # none, or ambiguous: leave it to the translator
        old = found[0]
        mapping: dict[str, str] = {}
        if any(mapping.setdefault(a, b) != b for a, b in zip(FIELD.findall(old.id), FIELD.findall(msg.id))):
            continue
        string = FIELD.sub(lambda f: "{" + mapping.get(f.group(1), f.group(1)) + "}", old.string)
        cat.add(msg.id, string, locations=msg.locations, flags=set(msg.flags) - {"fuzzy"},
                context=msg.context)
        n += 1
    _save(lang, cat)
    print(f"{lang}: carried {n} translation(s) over renamed fields")
    return 0


def compile_all() -> int:
    for lang in sorted(p.name for p in LOCALE.iterdir() if (p / "LC_MESSAGES" / "printpipe.po").exists()):
        cat = _load(lang)
        mo = _po(lang).with_suffix(".mo")
        tmp = mo.with_suffix(".mo.tmp")
        with tmp.open("wb") as fh:
            write_mo(fh, cat, use_fuzzy=False)
        tmp.replace(mo)
        done = sum(1 for m in cat if m.id and m.string and not m.fuzzy)
        print(f"{lang}: {done} of {sum(1 for m in cat if m.id)} message(s) compiled into {mo.relative_to(ROOT)}")
    return 0


def fill_en() -> int:
    cat = _load("en")
    n = 0
    for msg in cat:
        if not msg.id or not _empty(msg):
            continue
        msg.string = tuple(msg.id) if isinstance(msg.id, (tuple, list)) else msg.id
        msg.flags.discard("fuzzy")
        n += 1
    _save("en", cat)
    print(f"en: filled {n} message(s)")
    return 0


def missing(lang: str) -> int:
    cat = _load(lang)
    bad = [m for m in cat if m.id and (_empty(m) or m.fuzzy)]
    for m in bad:
        print(("FUZZY " if m.fuzzy else "") + json.dumps(m.id, ensure_ascii=False))
    print(f"{lang}: {len(bad)} message(s) untranslated or fuzzy", file=sys.stderr)
    return 1 if bad else 0


def apply(lang: str, path: str) -> int:
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    cat = _load(lang)
    n = 0
    for msg in cat:
        key = msg.id[0] if isinstance(msg.id, (tuple, list)) else msg.id
        if key in table:
            value = table[key]
            msg.string = tuple(value) if isinstance(value, list) else value
            msg.flags.discard("fuzzy")
            n += 1
    _save(lang, cat)
    print(f"{lang}: applied {n} of {len(table)} translation(s)")
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    if argv[0] == "carry" and len(argv) == 2:
        return carry(argv[1])
    if argv[0] == "compile":
        return compile_all()
    if argv[0] == "fill-en":
        return fill_en()
    if argv[0] == "missing":
        return missing(argv[1] if len(argv) > 1 else "zh")
    if argv[0] == "apply" and len(argv) == 3:
        return apply(argv[1], argv[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
