"""The installed package stands alone: pip installs ``reid`` only (``tools/``, ``configs/``, ``tests/``
and ``scripts/`` stay in the checkout), and no module of it imports the checkout's tooling or builds a
path into the checkout's configs/, tests/ or scripts/ (they are named in docstrings and messages only).
Installed into a fresh venv and used from another folder, the package was also run by hand (README,
"Looking at what a run retrieves, and using its model"); a run's relative paths: tests/test_rundir.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKOUT_ONLY = ("configs", "tests", "scripts", "tools")


def test_pip_installs_the_reid_package_only():
    section = re.search(r"^\[tool\.setuptools\.packages\.find\]\n(.*?)(?:^\[|\Z)",
                        (REPO / "pyproject.toml").read_text(), re.S | re.M)
    include = re.search(r"^include\s*=\s*(\[[^\]]*\])", section.group(1), re.M)
    assert ast.literal_eval(include.group(1)) == ["reid*"]


def checkout_references(tree: ast.AST) -> list[str]:
    """Imports of the checkout's packages, and paths built into its folders (``x / "configs"``,
    ``Path("tests/...")``), in one module's syntax tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in CHECKOUT_ONLY]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module] if node.module.split(".")[0] in CHECKOUT_ONLY else []
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts = [node.right] + ([node.left] if isinstance(node.left, ast.Constant) else [])
            found += [p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)
                      and p.value.split("/")[0] in CHECKOUT_ONLY]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Path":
            found += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and a.value.split("/")[0] in CHECKOUT_ONLY]
    return found


def test_no_module_of_the_package_reaches_into_the_checkout():
    offenders = {}
    for module in sorted((REPO / "reid").rglob("*.py")):
        found = checkout_references(ast.parse(module.read_text()))
        if found:
            offenders[str(module.relative_to(REPO))] = found
    assert offenders == {}
    # the check finds what it looks for
    assert sorted(checkout_references(ast.parse('from tools.bench import x\nREPO / "configs" / "bot.yaml"\n'
                                                'Path("tests/stub_trainer.py")'))) == [
        "configs", "tests/stub_trainer.py", "tools.bench"]
