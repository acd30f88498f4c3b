"""Simplified Chinese and English for what people read: the report, the CLI's messages, the web app.

Messages are marked in the source with ``_("...")`` (or ``N_("...")`` where the text is only
declared, e.g. in a module-level table, and translated later) and collected by Babel into gettext
catalogs under ``printpipe/locale/{zh,en}/LC_MESSAGES/printpipe.po``; the compiled ``.mo`` files are
committed and shipped as package data, so a wheel install needs no build step. ``make i18n``
re-extracts, updates and compiles them.

Two ways to pick the language:

- per call, for code serving several people at once (the web app)::

      _ = get_translator(detect_lang(request.headers.get("accept-language")))
      _("Upload a CT")

- once per process, for the CLI (``printpipe --lang zh``)::

      set_lang("zh")
      from printpipe.i18n import _
      print(_("Upload a CT"))

The English catalog is the identity (msgstr == msgid for almost everything) but exists so that a
test can check both languages cover every message. Message texts use ``str.format`` fields with
names (``"{n} parts"``), never positional ``%s``, so translators can reorder them.

Errors: printpipe raises :class:`~printpipe.errors.PrintpipeError` subclasses with English
f-strings at some 200 raise sites across modules other people edit. They are translated at the one
place they are printed (the CLI's error line, the web app's job error) by
:func:`translate_error`; see there for how.
"""

from __future__ import annotations

import gettext as _gettext
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

__all__ = [
    "LANGS",
    "DOMAIN",
    "LOCALE_DIR",
    "get_translator",
    "get_ngettext",
    "detect_lang",
    "normalize_lang",
    "set_lang",
    "current_lang",
    "_",
    "N_",
    "ngettext",
    "NP_",
    "part_label",
    "translate_error",
    "translate_message",
]

Lang = Literal["zh", "en"]

#: the languages printpipe ships, in order of preference when nothing says otherwise
LANGS: tuple[str, ...] = ("zh", "en")
#: the language used when neither the caller nor the environment names a supported one
DEFAULT_LANG: Lang = "en"
DOMAIN = "printpipe"
LOCALE_DIR = Path(__file__).with_name("locale")

_process_lang: Lang | None = None


# -- choosing the language -------------------------------------------------------------------------

def normalize_lang(tag: str | None) -> Lang | None:
    """Map a language tag or POSIX locale name to ``"zh"``, ``"en"`` or None.

    ``zh``, ``zh-CN``, ``zh_CN.UTF-8``, ``zh-Hans``, ``zh-SG`` (and the traditional variants, whose
    readers are better served by Simplified Chinese than by English) -> ``"zh"``; ``en``, ``en_US``
    ... -> ``"en"``; ``C``, ``POSIX``, empty, anything else -> None.
    """
    if not tag:
        return None
    base = tag.strip().split(".")[0].split("@")[0].replace("_", "-").lower()
    primary = base.split("-")[0]
    if primary in ("zh", "cmn"):
        return "zh"
    if primary == "en":
        return "en"
    return None


def _parse_accept_language(header: str) -> list[tuple[float, int, str]]:
    """``"zh-CN,zh;q=0.9,en;q=0.8"`` -> [(q, -position, tag), ...] (RFC 9110 section 12.5.4)."""
    items = []
    for pos, part in enumerate(header.split(",")):
        fields = [f.strip() for f in part.split(";")]
        tag = fields[0]
        if not tag:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _sep, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # a malformed weight: ignore the entry rather than guess
        if 0.0 < q <= 1.0:
            items.append((q, -pos, tag))
    items.sort(reverse=True)
    return items


def _env_lang() -> Lang | None:
    # the same precedence as gettext and glibc: LANGUAGE (a colon list), LC_ALL, LC_MESSAGES, LANG;
    # the first variable that is set decides (LC_ALL=C means "untranslated", not "look further")
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if not value:
            continue
        if var == "LANGUAGE":
            for tag in value.split(":"):
                lang = normalize_lang(tag)
                if lang:
                    return lang
            continue  # LANGUAGE without a supported entry: the LC_* variables decide
        return normalize_lang(value)
    return None


def detect_lang(accept_language: str | None = None) -> Lang:
    """The language to use: from an HTTP ``Accept-Language`` header when given, else the locale.

    Parameters
    ----------
    accept_language : str, optional
        The header's value. Entries are taken in order of their q-value (ties: the order written);
        the first one that maps to a shipped language wins; ``q=0`` entries are refused; ``*``
        matches the first shipped language that was not refused. With no header, or none of its
        entries usable, the process locale decides (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
        ``LANG``, as gettext reads them), then English.

    Examples
    --------
    >>> detect_lang("en-US;q=0.8,zh-CN")
    'zh'
    >>> detect_lang("zh-CN;q=0.5,en;q=0.9")
    'en'
    >>> detect_lang("fr, zh;q=0.5")
    'zh'
    """
    if accept_language:
        refused = set()
        for part in accept_language.split(","):
            fields = [f.strip() for f in part.split(";")]
            if any(f.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000")
                   for f in fields[1:]):
                lang = normalize_lang(fields[0])
                if lang:
                    refused.add(lang)
        for _q, _pos, tag in _parse_accept_language(accept_language):
            if tag == "*":
                for lang in LANGS:
                    if lang not in refused:
                        return lang  # type: ignore[return-value]
                continue
            lang = normalize_lang(tag)
            if lang and lang not in refused:
                return lang
    return _env_lang() or DEFAULT_LANG


#: how a process hands its language to the worker processes it starts (batch pools, the web
#: app's worker): :func:`set_lang` writes it, :func:`current_lang` of a process that never called
#: :func:`set_lang` reads it
_ENV_VAR = "PRINTPIPE_LANG"


def set_lang(lang: str | None) -> Lang:
    """Set the language of this process (the CLI calls it once, from ``--lang`` or the locale).

    ``None`` means "from the environment". Returns the language chosen. Unknown names raise
    ValueError (the CLI's ``choices`` stop them earlier). Processes started afterwards (a batch's
    workers) inherit the choice through the ``PRINTPIPE_LANG`` environment variable.
    """
    global _process_lang
    if lang is None:
        chosen: Lang = detect_lang()
    else:
        norm = normalize_lang(lang)
        if norm is None:
            raise ValueError(f"unknown language {lang!r}; choose one of {', '.join(LANGS)}")
        chosen = norm
    _process_lang = chosen
    os.environ[_ENV_VAR] = chosen
    return chosen


def current_lang() -> Lang:
    """The language :func:`_` translates into: the last :func:`set_lang` in this process, else
    the one a parent process set (``PRINTPIPE_LANG``), else the locale's."""
    if _process_lang is not None:
        return _process_lang
    return normalize_lang(os.environ.get(_ENV_VAR)) or detect_lang()


# -- translating -----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _translations(lang: str) -> _gettext.NullTranslations:
    return _gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang], fallback=True)


def get_translator(lang: str | None) -> Callable[[str], str]:
    """A ``gettext`` function for ``lang`` (``"zh"``, ``"en"``, a tag such as ``"zh-CN"``, or
    None for :func:`current_lang`). Messages missing from the catalog come back unchanged."""
    resolved = normalize_lang(lang) if lang else current_lang()
    return _translations(resolved or DEFAULT_LANG).gettext


def get_ngettext(lang: str | None) -> Callable[[str, str, int], str]:
    """The ``ngettext(singular, plural, n)`` function for ``lang`` (see :func:`get_translator`)."""
    resolved = normalize_lang(lang) if lang else current_lang()
    return _translations(resolved or DEFAULT_LANG).ngettext


def _(message: str) -> str:
    """Translate ``message`` into :func:`current_lang`."""
    return _translations(current_lang()).gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it now (translate it later with ``_``)."""
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    """Plural-aware translation into :func:`current_lang` (Chinese has one form)."""
    return _translations(current_lang()).ngettext(singular, plural, n)


def NP_(context: str, message: str) -> str:
    """Mark ``message`` with a context (``pgettext``) for extraction, without translating it."""
    return message


# Part names as the segmentation writes them (file names: parts/hip_left.stl). English keeps them
# as they are, so that the report names the files; Chinese names them as clinicians do.
_PART_NAMES = (
    NP_("part name", "pelvis"),
    NP_("part name", "hip_left"),
    NP_("part name", "hip_right"),
    NP_("part name", "sacrum"),
    NP_("part name", "femur_left"),
    NP_("part name", "femur_right"),
    NP_("part name", "spine"),
    NP_("part name", "implant_left"),
    NP_("part name", "implant_right"),
    NP_("part name", "bone"),
    NP_("part name", "all parts"),
)
_PART_PATTERNS = (
    (re.compile(r"(?P<part>.+)_mirrored"), NP_("part name", "{part} (mirrored template)")),
    (re.compile(r"fragment_(?P<n>\d+)"), NP_("part name", "fragment {n}")),
    (re.compile(r"bone_(?P<n>\d+)"), NP_("part name", "bone {n}")),
    (re.compile(r"other_(?P<n>\d+)"), NP_("part name", "other {n}")),
)


def part_label(name: str, lang: str | None = None) -> str:
    """How a part is called in ``lang``: ``"hip_left"`` -> ``"左髋骨"`` (English: the name itself).

    Examples
    --------
    >>> part_label("hip_right_mirrored", "zh")
    '右髋骨（镜像模板）'
    >>> part_label("femur_left", "en")
    'femur_left'
    """
    resolved = (normalize_lang(lang) if lang else current_lang()) or DEFAULT_LANG
    if resolved == "en":
        return name
    pgettext = _translations(resolved).pgettext
    translated = pgettext("part name", name)
    if translated != name:
        return translated
    for pattern, template in _PART_PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            fields = {k: (part_label(v, resolved) if k == "part" else v) for k, v in m.groupdict().items()}
            return _safe_format(pgettext("part name", template), fields, name)
    return name


# -- errors ----------------------------------------------------------------------------------------

# One line per error class, so that even a message with no Chinese template gets a Chinese label.
_ERROR_LABELS = {
    "InputError": N_("Input error"),
    "SegmentationError": N_("Segmentation error"),
    "MeshError": N_("Mesh error"),
    "PrinterError": N_("Printer error"),
    "PrintpipeError": N_("Error"),
}

_FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@lru_cache(maxsize=None)
def _template_regex(template: str) -> re.Pattern[str]:
    parts = []
    pos = 0
    seen: set[str] = set()
    for m in _FIELD_RE.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
        seen.add(name)
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts), re.DOTALL)


def _error_templates() -> tuple[str, ...]:
    try:
        from printpipe._error_templates import TEMPLATES
    except ImportError:  # pragma: no cover - the generated table is committed
        return ()
    return TEMPLATES


def match_error_template(message: str) -> tuple[str, dict[str, str]] | None:
    """The error template ``message`` was made from, and its fields, or None.

    When several templates match, the one with the most fixed text wins (the most specific).
    """
    best = None
    best_fixed = -1
    for template in _error_templates():
        m = _template_regex(template).fullmatch(message)
        if m is None:
            continue
        fixed = len(_FIELD_RE.sub("", template))
        if fixed > best_fixed:
            best, best_fixed = (template, m.groupdict()), fixed
    return best


def translate_error(exc: BaseException, lang: str | None = None) -> str:
    """The one-line message for ``exc`` in ``lang``, with its kind: ``"输入错误：..."``.

    How: the English messages are f-strings at their raise sites, in modules that other people
    change all the time. Rather than editing every raise (and keeping every future one in line),
    ``make i18n`` reads those raise sites with ``ast`` and writes each f-string's shape as a
    template with named fields (``"slice spacing jumps from {a} to {b} mm ..."``) into
    ``printpipe/_error_templates.py``; Babel extracts the templates from there like any other
    message. Here the message is matched against the templates, the matching template is
    translated and the fields (numbers, paths, option names, which stay as they were) are put
    back. A message that matches no template (a raise added since the last ``make i18n``, or one
    built far from its raise) keeps its English text behind a translated label, so nothing is
    lost. An exception may also carry ``msgid`` and ``fields`` attributes itself (new code that
    wants exact control); then those are used.
    """
    _t = get_translator(lang)
    label = _t(_ERROR_LABELS.get(type(exc).__name__, _ERROR_LABELS["PrintpipeError"]))
    for cls in type(exc).__mro__:  # a subclass defined elsewhere gets its parent's label
        if cls.__name__ in _ERROR_LABELS:
            label = _t(_ERROR_LABELS[cls.__name__])
            break
    sep = _t(": ")
    msgid = getattr(exc, "msgid", None)
    if isinstance(msgid, str):
        fields = dict(getattr(exc, "fields", {}) or {})
        return f"{label}{sep}{_safe_format(_t(msgid), fields, msgid)}"
    message = str(exc)
    found = match_error_template(message)
    if found is None:
        return f"{label}{sep}{message}"
    template, fields = found
    translated = _t(template)
    if translated == template:
        return f"{label}{sep}{message}"
    return f"{label}{sep}{_safe_format(translated, fields, message)}"


def translate_message(message: str, lang: str | None = None) -> str:
    """``message`` (a warning printpipe wrote, in English) in ``lang``, when it matches a template.

    The same matching as :func:`translate_error`, without the kind label; a message that matches
    no template comes back unchanged.
    """
    found = match_error_template(message)
    if found is None:
        return message
    template, fields = found
    translated = get_translator(lang)(template)
    if translated == template:
        return message
    return _safe_format(translated, fields, message)


def _safe_format(template: str, fields: dict, fallback: str) -> str:
    # only named fields are substituted; a translation that names a field the template lacks
    # (a translator's slip) shows the English original instead of raising inside the error path
    try:
        return _FIELD_RE.sub(lambda m: str(fields[m.group(1)]), template)
    except KeyError:
        return fallback
