"""The layout's rules, checked on the source: the import graph follows the data flow with no cycles and no
forbidden edges, every package is declared to setuptools, and README's Python block runs as written."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the package it is installed as
PACKAGES = {"backend/api": "ldm_explore", "backend": "ldm_explore.backend", "cache": "ldm_explore.cache",
            "tui": "ldm_explore.tui"}

# what each part of the project may import (besides itself); everything else is a forbidden edge. The order
# is the data flow: prompts -> pipeline -> run store; labels/probes/metrics; bundles; experiment | explorer.
ALLOWED = {
    "cache": set(),
    "backend.errors": {"cache"},
    "backend.prompts": {"backend.errors"},
    "backend.probing": set(),
    "backend.pipeline": {"backend.errors", "backend.prompts", "cache"},
    "backend.bundles": {"backend.errors", "backend.prompts", "backend.pipeline"},
    "backend.toyworld": {"backend.errors", "backend.prompts", "backend.pipeline", "backend.probing", "backend.bundles"},
    "backend.experiment": {"backend.errors", "backend.prompts", "backend.pipeline", "backend.probing",
                           "backend.bundles", "cache"},
    "backend.explore": {"backend.errors", "backend.prompts", "backend.pipeline", "backend.probing",
                        "backend.bundles", "cache"},
    "backend.cli": {"backend.errors", "backend.prompts", "backend.pipeline", "backend.probing", "backend.bundles",
                    "backend.toyworld", "backend.experiment", "backend.explore", "cache", "tui"},
    "api": {"backend.errors", "backend.prompts", "backend.pipeline", "backend.probing", "backend.bundles",
            "backend.experiment", "backend.explore", "cache"},
    # the app lays out what the explorer's engine computes: no science, only the property table for names
    "tui": {"backend.explore", "backend.errors", "backend.probing.properties"},
}


def source_modules() -> dict[str, Path]:
    """module name -> file, for every Python file of the installed packages."""
    out = {}
    for folder, pkg in sorted(PACKAGES.items(), key=lambda kv: -len(kv[0])):
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            if folder == "backend" and rel.parts[0] == "api":
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            out.setdefault(".".join([pkg, *parts]), f)
    return out


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (lazy imports in functions included)."""
    graph = {}
    for name, f in modules.items():
        is_pkg = f.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:  # "from pkg import sub" imports the module pkg.sub when there is one
                    targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def part(module: str) -> str:
    """The part of the project a module belongs to (a key of ALLOWED)."""
    p = module.split(".")
    if module == "ldm_explore":
        return "api"
    if p[1] in ("cache", "tui"):
        return p[1]
    return "backend." + p[2] if len(p) > 2 else "backend"


def allowed(src: str, dst: str) -> bool:
    a, b = part(src), part(dst)
    if a == b or b == "backend":  # within a part; the backend package itself is empty
        return True
    rules = ALLOWED[a]
    # a rule naming a module (not a part) allows that module alone
    return b in rules or any(dst == "ldm_explore." + r for r in rules if r not in ALLOWED)


def test_every_part_has_rules():
    modules = source_modules()
    assert {part(m) for m in modules} - {"backend"} == set(ALLOWED)
    for folder in ("pipeline", "bundles", "probing", "experiment", "explore", "toyworld", "cli"):
        assert f"ldm_explore.backend.{folder}" in modules, folder  # the data flow's folders


def test_no_forbidden_import():
    graph = imports(source_modules())
    bad = [f"{src} -> {dst}" for src, dsts in graph.items() for dst in sorted(dsts) if not allowed(src, dst)]
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = imports(source_modules())
    # between parts (lazy imports included) and between modules: a depth-first search for a back edge
    parts: dict[str, set[str]] = {}
    for src, dsts in graph.items():
        parts.setdefault(part(src), set()).update(part(d) for d in dsts if part(d) != part(src))
    for g in (parts, graph):
        state: dict[str, int] = {}

        def visit(n, path, g=g, state=state):
            state[n] = 1
            for m in sorted(g.get(n, ())):
                if state.get(m) == 1:
                    pytest.fail("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
                if m not in state:
                    visit(m, path + [m])
            state[n] = 2

        for n in sorted(g):
            if n not in state:
                visit(n, [n])


def test_the_checker_sees_a_forbidden_edge_and_a_cycle():
    assert not allowed("ldm_explore.backend.explore.session", "ldm_explore.backend.experiment.engine")
    assert not allowed("ldm_explore.cache.store", "ldm_explore.backend.errors")
    assert not allowed("ldm_explore.tui.widgets.step_view", "ldm_explore.backend.pipeline.layers")
    assert allowed("ldm_explore.tui.widgets.sparks", "ldm_explore.backend.probing.properties")
    assert not allowed("ldm_explore.tui.widgets.sparks", "ldm_explore.backend.probing.metrics")
    modules = source_modules()
    graph = imports(modules)
    # relative imports resolve to the modules they name
    assert "ldm_explore.backend.probing.properties" in graph["ldm_explore.backend.probing.metrics"]
    assert "ldm_explore.backend.bundles.toyworld" in graph["ldm_explore.backend.bundles"]
    assert "ldm_explore.cache.errors" in graph["ldm_explore.cache.store"]


def test_every_package_is_declared():
    """pyproject lists every folder that is installed (code or bundle data), so setuptools installs it without
    warnings, and maps the top-level package to the public API."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = cfg["package-dir"]
    assert dirs == {pkg: folder for folder, pkg in PACKAGES.items()}
    want = set()
    for folder, pkg in PACKAGES.items():
        for d in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            rel = d.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts or (folder == "backend" and rel.parts[:1] == ("api",)):
                continue
            if any(f.is_file() for f in d.iterdir()):
                want.add(".".join([pkg, *rel.parts]))
    assert set(cfg["packages"]) == want
    for pkg, patterns in cfg["package-data"].items():  # every data file is matched by a pattern
        data = [f for f in folder_of(pkg).iterdir() if f.is_file() and f.suffix != ".py"]
        assert data and all(any(f.match(p) for p in patterns) for f in data), (pkg, data)
    for pkg in want:  # and a data folder has its patterns
        if not any(f.suffix == ".py" for f in folder_of(pkg).iterdir()):
            assert pkg in cfg["package-data"], pkg


def folder_of(pkg: str) -> Path:
    """The source folder of an installed package name."""
    top = max((p for p in PACKAGES.values() if pkg == p or pkg.startswith(p + ".")), key=len)
    folder = next(f for f, p in PACKAGES.items() if p == top)
    return ROOT.joinpath(folder, *pkg[len(top):].split(".")[1:])


def test_public_api_is_lazy_and_documented():
    import subprocess
    import sys

    code = "import sys, ldm_explore; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # importing the package loads nothing heavy
    import ldm_explore

    for name in ldm_explore.__all__:
        obj = getattr(ldm_explore, name)
        assert obj is not None
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"ldm_explore.{name} has no docstring"
    with pytest.raises(AttributeError):
        ldm_explore.no_such_name  # noqa: B018


@pytest.mark.slow
def test_readme_python_block_runs(tmp_path, monkeypatch):
    """README's "Python" section runs as written (on toyworld, in a scratch folder)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README has no ```python block under '## Python'"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LDM_EXPLORE_CACHE", str(tmp_path / "store"))
    ns: dict = {}
    exec(compile("\n".join(blocks), "README.md", "exec"), ns)
    assert (tmp_path / "report" / "summary.md").exists()
