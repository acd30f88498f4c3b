"""Chinese and English: catalogs complete and compiled, language choice, translated errors, CJK pictures."""

from __future__ import annotations

import gettext
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from printpipe import i18n
from printpipe.errors import InputError, PrinterError, PrintpipeError
from printpipe.i18n import detect_lang, get_translator, part_label, set_lang, translate_error

babel = pytest.importorskip("babel", reason="Babel (dev extra) reads the .po catalogs")
from babel.messages.pofile import read_po  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOCALE = REPO / "printpipe" / "locale"
FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
GRAMMAR_FIELDS = {"verb"}


def _catalog(path: Path, lang: str | None = None):
    with path.open("rb") as fh:
        return read_po(fh, locale=lang)


def _key(msg):
    return (msg.context, msg.id if isinstance(msg.id, str) else tuple(msg.id))


@pytest.fixture(autouse=True)
def _reset_lang(monkeypatch):
    monkeypatch.delenv("PRINTPIPE_LANG", raising=False)  # restored after the test, with set_lang's write
    yield
    set_lang(None)


# -- catalogs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_message_of_the_template_is_translated(lang):
    template = _catalog(LOCALE / "printpipe.pot")
    po = _catalog(LOCALE / lang / "LC_MESSAGES" / "printpipe.po", lang)
    have = {_key(m): m for m in po if m.id}
    missing, empty, fuzzy = [], [], []
    for msg in template:
        if not msg.id:
            continue
        got = have.get(_key(msg))
        if got is None:
            missing.append(msg.id)
        elif not (all(got.string) if isinstance(got.string, (tuple, list)) else got.string):
            empty.append(msg.id)
        elif got.fuzzy:
            fuzzy.append(msg.id)
    assert not (missing or empty or fuzzy), (
        f"{lang}: {len(missing)} missing, {len(empty)} untranslated, {len(fuzzy)} fuzzy "
        f"(run `make i18n` and translate printpipe/locale/{lang}/LC_MESSAGES/printpipe.po): "
        f"{(missing + empty + fuzzy)[:5]}")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_translations_keep_the_named_fields(lang):
    # a translation must use exactly the template's fields: a missing one loses information
    # (the path, the value seen), an extra one cannot be filled
    po = _catalog(LOCALE / lang / "LC_MESSAGES" / "printpipe.po", lang)
    bad = []
    for msg in po:
        if not msg.id or not isinstance(msg.id, str):
            continue
        # English grammar ("change" / "changes") has no place in Chinese: such fields may be left out
        if set(FIELD.findall(msg.id)) - GRAMMAR_FIELDS != set(FIELD.findall(msg.string)) - GRAMMAR_FIELDS:
            bad.append((msg.id, msg.string))
    assert not bad, bad[:5]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_translations_keep_percent_placeholders(lang):
    # argparse's own messages are %-formatted; "80 % of" in a message is not a placeholder
    percent = re.compile(r"%(?:\(\w+\))?[sdr]|%%")
    po = _catalog(LOCALE / lang / "LC_MESSAGES" / "printpipe.po", lang)
    bad = [(m.id, m.string) for m in po if isinstance(m.id, str) and m.id
           and sorted(percent.findall(m.id)) != sorted(percent.findall(m.string))]
    assert not bad, bad[:5]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_mo_files_are_compiled_from_the_current_po(lang):
    po = _catalog(LOCALE / lang / "LC_MESSAGES" / "printpipe.po", lang)
    mo = LOCALE / lang / "LC_MESSAGES" / "printpipe.mo"
    with mo.open("rb") as fh:
        compiled = gettext.GNUTranslations(fh)._catalog  # msgid (with context) -> msgstr
    expected = {}
    for msg in po:
        if not msg.id or msg.fuzzy or not msg.string:
            continue
        key = msg.id if msg.context is None else f"{msg.context}\x04{msg.id}"
        if isinstance(msg.id, (tuple, list)):
            for i, form in enumerate(msg.string):
                expected[(msg.id[0], i)] = form
        else:
            expected[key] = msg.string
    compiled = {k: v for k, v in compiled.items() if k != ""}  # "" is the header
    assert compiled == expected, "run `make i18n` (pybabel compile) and commit the .mo files"


def test_wheel_package_data_ships_the_compiled_catalogs():
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = data["tool"]["setuptools"]["package-data"]["printpipe"]
    shipped = {p for g in globs for p in (REPO / "printpipe").glob(g)}
    for lang in ("zh", "en"):
        assert LOCALE / lang / "LC_MESSAGES" / "printpipe.mo" in shipped


# -- choosing the language --------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("en;q=0.5, zh-Hans-CN;q=0.7", "zh"),      # q-values decide, not the order
    ("zh;q=0.8, en;q=0.8", "zh"),              # a tie keeps the written order
    ("fr-FR, de;q=0.9, zh-TW;q=0.3", "zh"),    # first supported one
    ("*;q=0.5, zh;q=0", "en"),                 # q=0 refuses Chinese; the wildcard takes English
    ("en;q=0, *", "zh"),
    ("zh;q=abc, en", "en"),                    # malformed weight: entry ignored
])
def test_accept_language_with_q_values(header, expected, monkeypatch):
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    assert detect_lang(header) == expected


@pytest.mark.parametrize("env, expected", [
    ({"LANG": "zh_CN.UTF-8"}, "zh"),
    ({"LANG": "en_US.UTF-8"}, "en"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LC_ALL": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),        # LC_ALL before LANG
    ({"LC_MESSAGES": "zh_SG.UTF-8", "LANG": "en_GB.UTF-8"}, "zh"),   # LC_MESSAGES before LANG
    ({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"}, "en"),                   # LC_ALL=C: untranslated
    ({"LANGUAGE": "fr:zh_CN", "LANG": "en_US.UTF-8"}, "zh"),         # gettext's LANGUAGE list
    ({}, "en"),
])
def test_locale_environment(env, expected, monkeypatch):
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert detect_lang() == expected
    assert detect_lang("fr, de") == expected  # a header with nothing usable defers to the locale


def test_translators_and_part_names():
    zh, en = get_translator("zh-CN"), get_translator("en")
    assert zh("printpipe QA report") == "printpipe 质量检查报告"
    assert en("printpipe QA report") == "printpipe QA report"
    assert get_translator("zh")("a message nobody marked") == "a message nobody marked"
    assert [part_label(n, "zh") for n in ("pelvis", "hip_left", "sacrum", "femur_right")] == [
        "骨盆", "左髋骨", "骶骨", "右股骨"]
    assert part_label("hip_right_mirrored", "zh") == "右髋骨（镜像模板）"
    assert part_label("fragment_3", "zh") == "骨块 3"
    assert part_label("hip_left", "en") == "hip_left"
    set_lang("zh")
    assert i18n._("layers") == "层数" and i18n.current_lang() == "zh"
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        set_lang("fr")


def test_worker_processes_inherit_the_language():
    import subprocess

    set_lang("zh")
    code = "from printpipe.i18n import current_lang, _; print(current_lang(), _('layers'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["zh", "层数"]


# -- errors at the boundary -------------------------------------------------------------------------

def test_error_template_fields_are_put_back():
    exc = PrinterError("unknown printer 'foo'; choose one of ender3, mk3s (see `printpipe printers`) "
                       "or pass the path of your own profile .toml")
    assert translate_error(exc, "zh") == (
        "打印机错误：未知的打印机 'foo'；请从 ender3, mk3s 中选择（见 `printpipe printers`），"
        "或给出你自己的 .toml 配置文件路径")
    assert translate_error(exc, "en").startswith("Printer error: unknown printer 'foo'")


def test_unknown_message_keeps_english_behind_a_translated_label():
    class CustomError(InputError):
        pass

    assert translate_error(CustomError("something new went wrong"), "zh") == "输入有误：something new went wrong"
    assert translate_error(PrintpipeError("x"), "zh") == "错误：x"


def test_exception_may_carry_its_own_msgid():
    exc = InputError("English text")
    exc.msgid, exc.fields = "wrote {path}", {"path": "a.stl"}
    assert translate_error(exc, "zh") == "输入有误：已写入 a.stl"


def test_most_specific_template_wins():
    # "No surface found at {what}; ..." also matches the level message; the longer template wins
    found = i18n.match_error_template("No surface found at 300 HU: the region is empty")
    assert found == ("No surface found at {level} HU: the region is empty", {"level": "300"})


def test_cli_prints_one_translated_line(capsys, tmp_path):
    from printpipe.cli.main import main

    missing = tmp_path / "no-such-folder"
    assert main(["inspect", str(missing), "--lang", "zh"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("printpipe: 输入有误：输入路径 ") and err[0].endswith("[InputError]")
    assert str(missing) in err[0]  # the fields (here the path) are kept as they were
    assert main(["--lang=en", "inspect", str(missing)]) == 1
    assert capsys.readouterr().err.startswith("printpipe: InputError: input path ")


def test_cli_usage_errors_in_chinese(capsys):
    from printpipe.cli.main import main

    assert main(["run", "--lang", "zh"]) == 2
    err = capsys.readouterr().err
    assert "printpipe run：错误：缺少以下必需的参数：input, -o/--output" in err and "用法：" in err
    assert main(["run", "--lang", "en"]) == 2  # and back: the language is chosen per call
    assert "error: the following arguments are required" in capsys.readouterr().err


def test_cli_help_in_chinese(capsys):
    from printpipe.cli.main import SUBCOMMANDS, main

    for name in SUBCOMMANDS:
        assert main([name, "--help", "--lang", "zh"]) == 0, name  # argparse %-formats every help text
        out = capsys.readouterr().out
        assert "用法：" in out and "显示此帮助信息并退出" in out, name
    main(["run", "--help", "--lang", "zh"])
    assert "层高，单位 mm（默认 0.2）" in capsys.readouterr().out
    main(["run", "--help", "--lang", "en"])
    assert "layer height in mm (default 0.2)" in capsys.readouterr().out


def test_cli_lang_defaults_to_the_locale(capsys, tmp_path, monkeypatch):
    from printpipe.cli.main import main

    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert main(["inspect", str(tmp_path / "nope")]) == 1
    assert "输入有误" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nope"), "--lang", "xx"]) == 2  # argparse: invalid choice


# -- pictures ---------------------------------------------------------------------------------------

def _cjk_font_or_skip():
    from printpipe._fonts import cjk_font

    font = cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-noto-cjk, done by "
                    "scripts/install_sysdeps.sh)")
    return font


def test_pillow_title_font_draws_chinese_glyphs():
    _cjk_font_or_skip()
    from PIL import Image, ImageDraw

    from printpipe._fonts import pil_font

    font = pil_font(24, "zh")

    def ink(text):
        im = Image.new("L", (120, 40), 0)
        ImageDraw.Draw(im).text((2, 2), text, fill=255, font=font)
        return np.asarray(im)

    bone, tofu = ink("骨"), ink("\ue000")  # a private-use code point: the font's empty box
    assert bone.any()
    assert not np.array_equal(bone, tofu)


@pytest.fixture(scope="module")
def zh_report(tmp_path_factory):
    import trimesh

    from printpipe.report import write_report
    from printpipe.volume import Volume

    nz, ny, nx = 24, 40, 48
    hu = np.full((nz, ny, nx), -1000, np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[6:18, 10:30, 8:22] = 1
    labels[6:18, 10:30, 26:40] = 2
    hu[labels > 0] = 900
    vol = Volume(hu, (2.0, 1.0, 1.0))
    names = {1: "hip_left", 2: "femur_right"}
    parts = {"hip_left": trimesh.creation.box((14, 20, 24)),
             "femur_right": trimesh.creation.icosphere(2, radius=8.0)}
    parts["femur_right"].apply_translation((20, 0, 0))
    manifest = {"printpipe_version": "0", "created": "2026-12-04T06:00:00+00:00", "status": "ok",
                "input": {}, "segmentation": {},
                "parts": [{"name": n, "triangles": len(m.faces), "watertight": True, "volume_mm3": 1.0,
                           "area_mm2": 1.0, "bbox_mm": {"size": [1, 2, 3]}} for n, m in parts.items()],
                "print": {"printer": "Ender-3", "material": "PLA", "time_s": 7260.0, "filament_mm": 1500.0,
                          "filament_g": 4.5, "layer_count": 100, "plates": 1},
                "warnings": [], "timings_s": {"read": 0.1, "total": 1.0}}
    out = tmp_path_factory.mktemp("zh_report")
    with warnings.catch_warnings():
        # matplotlib warns "Glyph ... missing from font(s)" for every character it draws as tofu
        warnings.filterwarnings("error", message=".*[Gg]lyph.*missing.*")
        write_report(out, manifest=manifest, volume=vol, labels=labels, names=names, parts=parts, lang="zh")
    return out


def test_chinese_report_html(zh_report):
    doc = (zh_report / "report.html").read_text(encoding="utf-8")
    assert "<html lang='zh-CN'>" in doc
    for text in ("printpipe 质量检查报告", "部件：网格检查", "左髋骨", "右股骨", "预计打印时间",
                 "2 小时 1 分钟", "耗材", "轴位", "三维视图"):
        assert text in doc, text
    assert "hip_left" in doc  # the file name stays beside the Chinese name


def test_chinese_report_pictures_have_no_tofu(zh_report):
    # the slice pictures are drawn by matplotlib under the "glyph missing -> error" filter above;
    # here: the fonts they used are CJK ones, so the characters had glyphs
    _cjk_font_or_skip()
    from printpipe._fonts import mpl_rc

    rc = mpl_rc("zh")
    assert rc["font.sans-serif"][0].startswith(("Noto Sans CJK", "Noto Sans SC", "Source Han", "WenQuanYi",
                                                "Droid Sans Fallback", "Noto Serif CJK"))
    for name in ("axial.png", "coronal.png", "sagittal.png", "3d_all.png", "3d_hip_left.png"):
        assert (zh_report / "pictures" / name).stat().st_size > 1000


def test_warnings_are_translated_where_shown():
    from printpipe.i18n import translate_message

    assert translate_message("3 hole(s) filled with 12 faces", "zh") == "补了 3 个孔洞，新增 12 个面"
    assert translate_message("3 hole(s) filled with 12 faces", "en") == "3 hole(s) filled with 12 faces"
    assert translate_message("a warning no template knows", "zh") == "a warning no template knows"


def test_font_cache_older_than_the_fonts_is_refreshed(monkeypatch):
    # matplotlib's font cache is built once; fonts installed later (make sysdeps after the first
    # run) are missing from it: cjk_font adds the system's CJK files itself
    _cjk_font_or_skip()
    from matplotlib import font_manager as fm

    from printpipe import _fonts

    monkeypatch.setattr(fm.fontManager, "ttflist", [f for f in fm.fontManager.ttflist if "CJK" not in f.name])
    _fonts.cjk_font.cache_clear()
    try:
        assert _fonts.cjk_font() is not None
    finally:
        _fonts.cjk_font.cache_clear()


def test_without_a_cjk_font_pictures_stay_english(monkeypatch, tmp_path):
    import trimesh

    from printpipe import _fonts
    from printpipe.report import write_report
    from printpipe.volume import Volume

    monkeypatch.setattr(_fonts, "cjk_font", lambda: None)
    monkeypatch.setenv("PRINTPIPE_RENDERER", "matplotlib")
    assert _fonts.mpl_rc("zh") == {} and _fonts.mpl_families("zh") is None
    hu = np.full((6, 8, 8), -1000, np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[2:4, 2:6, 2:6] = 1
    manifest = {"status": "ok", "parts": [], "warnings": []}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Gg]lyph.*missing.*")  # no tofu: English text
        write_report(tmp_path, manifest=manifest, volume=Volume(hu, (1.0, 1.0, 1.0)), labels=labels,
                     names={1: "sacrum"}, parts={"sacrum": trimesh.creation.box((2, 4, 4))}, lang="zh")
    doc = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "图片中的文字保留为英文：未找到中文字体（请安装 fonts-noto-cjk）。" in doc
    assert "质量检查报告" in doc  # the page itself is still Chinese (the browser has its own fonts)
