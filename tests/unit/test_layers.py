"""The dependency rule, checked on every import of every .py file of the checkout.

Layers, bottom to top (README "Architecture"):

* the kernel ``skewless`` imports nothing of ours but itself;
* the feature definitions ``feature_repo`` and the stages (ingestion, etl, training,
  serving, monitoring) import the kernel only (and themselves);
* the composition root ``cli`` wires stages together (and runs the benchmarks); it does
  not import the definitions, which it loads from a path in settings;
* ``benchmarks`` and ``tests`` are top layers; tests do not import benchmarks, and
  nothing imports tests or the composition root.

An import is any ``import``/``from`` statement (at module level or inside a function),
an ``import_module``/``__import__``/``find_spec`` call with a literal name (the literal
head of an f-string counts), and any string naming one of our modules
(``"serving.app:app_from_env"`` for uvicorn, ``"cli.config"`` in a table of modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

KERNEL = "skewless"
STAGES = ("ingestion", "etl", "training", "serving", "monitoring")
DEFINITIONS = "feature_repo"
ROOT = "cli"
BENCHMARKS = "benchmarks"
TESTS = "tests"

# What each layer may import of ours (itself always; third-party and stdlib always).
ALLOWED: dict[str, set[str]] = {
    KERNEL: set(),
    DEFINITIONS: {KERNEL},
    **{stage: {KERNEL} for stage in STAGES},
    ROOT: {KERNEL, *STAGES, BENCHMARKS},
    BENCHMARKS: {KERNEL, *STAGES, DEFINITIONS},
    TESTS: {KERNEL, *STAGES, DEFINITIONS, ROOT},
}
OURS = set(ALLOWED)
SKIP_DIRS = {".git", ".skewless", "build", "dist", "__pycache__", ".venv", "venv", ".pytest_cache"}
LOADERS = {"import_module", "__import__", "find_spec"}


def _is_our_module(dotted: str) -> bool:
    """Whether ``a.b.c`` names a module or package of this checkout."""
    parts = dotted.split(".")
    if parts[0] not in OURS or not all(p.isidentifier() for p in parts):
        return False
    path = REPO.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _literal_head(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)  # f"benchmarks.bench_{name}" -> "benchmarks.bench_"
    return None


def imports(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every reference to a module in ``source`` (absolute names)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            head = _literal_head(node.args[0])
            if name in LOADERS and head:
                found.append((node.lineno, head))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            module = node.value.split(":", 1)[0]  # "pkg.module:attr" (uvicorn) or "pkg.module"
            if "." in module and node.value.count(":") <= 1 and _is_our_module(module):
                found.append((node.lineno, module))
    return sorted(set(found))


def violations(path: Path, source: str) -> list[str]:
    """``file:line: ...`` for each import of ``source`` (the file at ``path``) against the rules."""
    rel = path.relative_to(REPO)
    layer = rel.parts[0]
    out = []
    for line, module in imports(source):
        target = module.split(".")[0]
        if target in OURS and target != layer and target not in ALLOWED[layer]:
            may = ", ".join(sorted(ALLOWED[layer])) or "nothing of ours"
            out.append(f"{rel}:{line}: {layer} imports {module} ({layer} may import {may})")
    return out


def python_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(REPO).parts))


def test_every_python_file_belongs_to_a_layer():
    unknown = sorted({str(p.relative_to(REPO).parts[0]) for p in python_files()} - OURS)
    assert not unknown, (f"{unknown}: give each a layer in tests/unit/test_layers.py (a new stage goes in STAGES) "
                         "and in README 'Architecture'")


def test_no_import_crosses_the_layers():
    found = [v for p in python_files() for v in violations(p, p.read_text(encoding="utf-8"))]
    assert not found, "imports against the dependency rule (README 'Architecture'):\n" + "\n".join(found)


def test_every_kind_of_import_is_seen():
    """The checker itself: each form of import it claims to see, in the kernel."""
    planted = '''
import etl.batch
from serving.app import create_app


def lazy():
    from training.trainer import train
    import importlib
    importlib.import_module("monitoring.consistency")
    importlib.import_module(f"benchmarks.bench_{name}")
    importlib.util.find_spec("feature_repo")
    uvicorn.run("serving.app:app_from_env", factory=True)
    return "cli.serve"


from skewless.settings import Settings  # its own layer
import numpy  # third party
'''
    found = violations(REPO / "skewless" / "planted.py", planted)
    assert [v.split(": ")[0] for v in found] == [f"skewless/planted.py:{n}" for n in (2, 3, 7, 9, 10, 11, 12, 13)]
    assert found[0] == ("skewless/planted.py:2: skewless imports etl.batch (skewless may import nothing of ours)")


def test_tests_may_not_import_benchmarks_and_stages_not_each_other():
    assert violations(REPO / "tests" / "t.py", "from benchmarks.bench_pit import entity_rows\n") == [
        "tests/t.py:1: tests imports benchmarks.bench_pit "
        "(tests may import cli, etl, feature_repo, ingestion, monitoring, serving, skewless, training)"]
    assert violations(REPO / "serving" / "x.py", "def f():\n    from training import trainer\n") == [
        "serving/x.py:2: serving imports training (serving may import skewless)"]
    assert violations(REPO / "etl" / "x.py", "from feature_repo.specs import VIEWS\n")
    assert violations(REPO / "cli" / "x.py", "from feature_repo.specs import VIEWS\n")
    assert not violations(REPO / "cli" / "x.py", "import etl.batch\nimport benchmarks.bench_pit\n")
