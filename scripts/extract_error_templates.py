"""Write ``printpipe/_error_templates.py``: the shape of every error and warning printpipe writes.

Run by ``make i18n`` before Babel's extraction. It reads the source with ``ast`` (nothing is
imported) and, for every ``raise <Name>Error(<f-string or string>)`` of the printpipe error tree
and every ``<...warnings...>.append(<f-string or string>)`` (the warnings that reach the manifest,
the report and the CLI summary), turns the f-string into a template with named fields::

    raise InputError(f"no CT series in {folder!r}; pass --series UID")
    ->  "no CT series in {folder}; pass --series UID"

It also collects the command line's help texts (``help=``, ``description=``, group titles in
``cli/*.py``), which ``printpipe.cli.main`` translates on the built parser, so that no option
module needs marking either.

Those templates are what the translators translate; :func:`printpipe.i18n.translate_error`
matches a raised message against them at the CLI/web boundary and puts the fields back into the
translation. The raise sites themselves are left alone (see the i18n module for why).

Usage: ``python scripts/extract_error_templates.py [--check]`` (``--check``: exit 1 when the
committed file is out of date, print nothing else).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "printpipe" / "_error_templates.py"
# where user-facing errors are raised; kernels and the test phantom raise programmer errors only
SOURCES = ("printpipe", "cli")
SKIP = ("printpipe/phantom.py", "printpipe/_error_templates.py", "printpipe/i18n.py",
        "printpipe/_segment_kernels.py")
ERROR_NAMES = {"PrintpipeError", "InputError", "SegmentationError", "MeshError", "PrinterError"}
MIN_FIXED_CHARS = 12  # "{detail}" alone, or "bad {x}", would match anything


def _field_name(node: ast.AST, used: dict[str, str]) -> str:
    text = ast.unparse(node)
    name = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower() or "value"
    if name[0].isdigit():
        name = "v_" + name
    name = name[:40].rstrip("_")
    base, i = name, 2
    while name in used and used[name] != text:
        name, i = f"{base}_{i}", i + 1
    used[name] = text
    return name


def _template(node: ast.AST) -> str | None:
    """The template of a message expression, or None when it is not a (f-)string literal."""
    used: dict[str, str] = {}
    parts: list[str] = []

    def walk(n: ast.AST) -> bool:
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            if "{" in n.value or "}" in n.value:
                return False  # literal braces would read as fields
            parts.append(n.value)
            return True
        if isinstance(n, ast.JoinedStr):
            for v in n.values:
                if isinstance(v, ast.Constant):
                    if not walk(v):
                        return False
                elif isinstance(v, ast.FormattedValue):
                    parts.append("{" + _field_name(v.value, used) + "}")
                else:
                    return False
            return True
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
            return walk(n.left) and walk(n.right)
        return False

    if not walk(node):
        return None
    text = "".join(parts)
    # two fields side by side cannot be told apart when matching
    if re.search(r"\}\{", text):
        return None
    if len(re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*\}", "", text).strip()) < MIN_FIXED_CHARS:
        return None
    return text


def collect() -> list[tuple[str, str]]:
    """[(template, "path:line"), ...] in source order, first occurrence of each template."""
    found: dict[str, str] = {}
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in SKIP or "_segment_" in rel and rel.endswith("_kernels.py"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            for node in ast.walk(tree):
                message = _error_message(node) or _warning_message(node)
                if message is None:
                    continue
                template = _template(message)
                if template is not None and template not in found:
                    found[template] = f"{rel}:{node.lineno}"
    return sorted(found.items(), key=lambda kv: kv[1])


def _error_message(node: ast.AST) -> ast.AST | None:
    """The message of ``raise SomeError(message, ...)`` for the printpipe error classes."""
    if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
        return None
    func = node.exc.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    if name not in ERROR_NAMES or not node.exc.args:
        return None
    return node.exc.args[0]


def _warning_message(node: ast.AST) -> ast.AST | None:
    """The text of ``warnings.append(text)``, ``rep.warnings.append(text)``, ``info["warnings"]...``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "append" and len(node.args) == 1):
        return None
    if "warn" not in ast.unparse(node.func.value).lower():
        return None
    return node.args[0]


_PARSER_CALLS = {"add_argument", "add_parser", "add_argument_group", "ArgumentParser", "add_subparsers",
                 "add_mutually_exclusive_group"}


def _plain_string(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in node.values):
        return "".join(v.value for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _plain_string(node.left), _plain_string(node.right)
        return None if left is None or right is None else left + right
    return None


def collect_cli_help() -> list[tuple[str, str]]:
    """[(help text, "path:line"), ...] of argparse help, descriptions and group titles in cli/."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "cli").glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in _PARSER_CALLS:
                continue
            texts = [_plain_string(k.value) for k in node.keywords if k.arg in ("help", "description", "title")]
            if name == "add_argument_group" and node.args:
                texts.append(_plain_string(node.args[0]))
            for text in texts:
                if text and text.strip() and text not in found:
                    found[text] = f"{rel}:{node.lineno}"
    return sorted(found.items(), key=lambda kv: kv[1])


def render(items: list[tuple[str, str]], help_items: list[tuple[str, str]] = ()) -> str:
    lines = [
        '"""Templates of the error and warning messages printpipe writes, translated where shown.',
        "",
        "Generated by ``scripts/extract_error_templates.py`` (``make i18n``) from the raise sites;",
        "do not edit by hand. See :func:`printpipe.i18n.translate_error`.",
        '"""',
        "",
        "",
        "def N_(message: str) -> str:  # marks a message for Babel's extraction",
        "    return message",
        "",
        "",
        "TEMPLATES = (",
    ]
    for template, where in items:
        lines.append(f"    # {where.split(':')[0]}")
        lines.append(f"    N_({template!r}),")
    lines.append(")")
    lines.append("")
    lines.append("# help texts of the command line (argparse), translated on the built parser")
    lines.append("CLI_HELP = (")
    for text, where in help_items:
        lines.append(f"    # {where.split(':')[0]}")
        lines.append(f"    N_({text!r}),")
    lines.append(")")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render(collect(), collect_cli_help())
    if "--check" in argv:
        return 0 if OUT.exists() and OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"{OUT.relative_to(ROOT)}: {text.count('N_(') - 1} error templates and help texts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
