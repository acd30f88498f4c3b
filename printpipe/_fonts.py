"""Fonts for text in the report's pictures: a CJK font when the text is Chinese.

Matplotlib's default DejaVu Sans has no Chinese glyphs (each would come out as an empty box,
"tofu"), and VTK's built-in fonts have none either. On Debian the ``fonts-noto-cjk`` package
(installed by ``scripts/install_sysdeps.sh``) provides Noto Sans CJK SC, a collection face that
matplotlib (3.7+ indexes the faces of ``.ttc`` files) and Pillow (``index=``) both load.

- :func:`cjk_font` finds one (first the Simplified Chinese faces, then any CJK face, then other
  common Chinese fonts) and warns once when there is none;
- :func:`mpl_rc` gives the rcParams to draw with: the CJK family first, DejaVu Sans as fallback
  (matplotlib falls back per glyph since 3.6);
- :func:`pil_font` gives a Pillow font for titles drawn onto VTK screenshots.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

__all__ = ["CjkFont", "cjk_font", "mpl_rc", "mpl_families", "pil_font", "CJK_FAMILIES"]

#: families tried in order; SC (Simplified Chinese) faces first, since glyph shapes differ between
#: the Chinese, Japanese and Korean forms of the same character (骨 among them)
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
    "Noto Serif CJK SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
    "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans GB", "Noto Sans CJK TC",
    "Noto Sans CJK JP", "Noto Sans CJK KR",
)
_FILE_HINT = re.compile(r"cjk|sourcehan|wqy|wenquan|droidsansfallback|msyh|simhei|simsun|pingfang",
                        re.IGNORECASE)


@dataclass(frozen=True)
class CjkFont:
    """A font face with Chinese glyphs: its family name, file and face index in the file."""

    family: str
    path: str
    index: int = 0


@lru_cache(maxsize=1)
def cjk_font() -> CjkFont | None:
    """The CJK font to draw Chinese with, or None (after one warning naming the package to install).

    When matplotlib's font cache predates the fonts (installed after matplotlib first ran), the
    system's font files whose names look CJK are added to it, so no cache has to be deleted.
    """
    from matplotlib import font_manager as fm

    found = _find(fm)
    if found is None:
        try:
            for path in fm.findSystemFonts():
                if _FILE_HINT.search(os.path.basename(path)):
                    try:
                        fm.fontManager.addfont(path)
                    except Exception as exc:  # an unreadable font file is not our problem
                        log.debug("cannot add font %s: %s", path, exc)
        except Exception as exc:  # pragma: no cover - fc-list missing or broken
            log.debug("system font scan failed: %s", exc)
        found = _find(fm)
    if found is None:
        log.warning("no CJK font found: Chinese text in the report's pictures would show as empty "
                    "boxes, so the pictures keep English labels. Install one (Debian: apt-get install "
                    "fonts-noto-cjk)")
    else:
        log.debug("CJK font: %s (%s, face %d)", found.family, found.path, found.index)
    return found


def _find(fm) -> CjkFont | None:
    entries: dict[str, object] = {}
    for entry in fm.fontManager.ttflist:
        if entry.name in CJK_FAMILIES and entry.style == "normal":
            best = entries.get(entry.name)
            # the regular weight, for titles and legends
            if best is None or abs(entry.weight - 400) < abs(best.weight - 400):  # type: ignore[attr-defined]
                entries[entry.name] = entry
    for family in CJK_FAMILIES:
        entry = entries.get(family)
        if entry is not None and os.path.exists(entry.fname):  # type: ignore[attr-defined]
            return CjkFont(family, entry.fname, int(getattr(entry, "index", 0) or 0))  # type: ignore[attr-defined]
    return None


def mpl_rc(lang: str) -> dict:
    """rcParams for matplotlib text in ``lang`` (use with ``matplotlib.rc_context``).

    English keeps matplotlib's defaults (an empty dict). Chinese puts the CJK family first, with
    DejaVu Sans behind it for any glyph it lacks; without a CJK font, also the defaults.
    """
    if lang != "zh":
        return {}
    font = cjk_font()
    if font is None:
        return {}
    return {"font.family": "sans-serif", "font.sans-serif": [font.family, "DejaVu Sans"],
            "axes.unicode_minus": False}


def mpl_families(lang: str) -> list[str] | None:
    """An explicit font family list for one matplotlib text in ``lang`` (``fontfamily=``), or None.

    For code that cannot wrap its drawing in :func:`mpl_rc`'s context: named families are resolved
    when the figure is drawn, whatever the rcParams are then.
    """
    rc = mpl_rc(lang)
    return list(rc["font.sans-serif"]) if rc else None


@lru_cache(maxsize=8)
def pil_font(size: int, lang: str = "zh"):
    """A Pillow font of ``size`` pixels that can draw ``lang`` (a CJK face for Chinese)."""
    from PIL import ImageFont

    font = cjk_font() if lang == "zh" else None
    if font is not None:
        try:
            return ImageFont.truetype(font.path, size=size, index=font.index)
        except OSError as exc:
            log.warning("cannot load %s (%s); picture titles fall back to DejaVu Sans", font.path, exc)
    try:
        from matplotlib import font_manager as fm

        return ImageFont.truetype(fm.findfont("DejaVu Sans"), size=size)
    except Exception:  # pragma: no cover - matplotlib always ships DejaVu Sans
        return ImageFont.load_default()


def has_cjk(text: str) -> bool:
    """Whether ``text`` contains CJK ideographs or fullwidth punctuation."""
    return any("\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text)
