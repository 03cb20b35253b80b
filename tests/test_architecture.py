"""The package's layering, read from the source: no upward import, no cycle, imports at the top.

The layers are the contract in docs/architecture.md; this test is what keeps it true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_vitrobust"

# Lower layers never import higher ones. Packages in the same layer do not import each other.
LAYERS: dict[str, int] = {
    "constants": 0,
    "io": 0,
    "formatting": 0,
    "images": 0,
    "seeding": 1,
    "stats": 1,
    "runtime": 1,
    "plots": 1,  # plots/__init__ (save_figure); topic figures belong to their stage, below
    "configs": 2,
    "corruptions": 2,
    "vit": 2,
    "models": 2,
    "distributed": 2,
    "roles": 3,
    "data": 4,
    "training": 5,
    "evaluation": 5,
    "analysis": 5,
    "plots.evaluation": 5,
    "plots.analysis": 5,
    "plots.sae": 5,
    "hub": 6,
    "report": 6,
    "plots.report": 6,
    "demo": 7,
}
# Same-layer imports that are part of the design (importer unit -> imported unit).
ALLOWED_SAME_LAYER = {
    ("configs", "models"),  # ModelArguments checks model_config with the models' own rule
    ("evaluation", "plots.evaluation"),
    ("analysis", "plots.analysis"),
    ("analysis", "plots.sae"),
    ("report", "plots.report"),
}
# Imports allowed inside functions: heavy and needed by one code path only (sae-lens takes ~8 s
# to import, evaluate ~4 s and only loading the shipped top-k metric module needs it).
LAZY_ALLOWED = ("sae_lens", "transformer_lens", "evaluate")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    """The layer unit of a module: 'plots.sae', 'analysis' (for analysis.sae.* too), 'io', ..."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] == "plots" and len(parts) > 1:
        return f"plots.{parts[1]}"
    return parts[0]


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Internal modules an import statement depends on."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = module.split(".")
            is_pkg = MODULES[module].name == "__init__.py"
            pkg = pkg if is_pkg else pkg[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([base] if base else []))
        for alias in node.names:
            full = f"{base}.{alias.name}"
            names.append(full if full in MODULES else base)
    return [n for n in names if n.split(".")[0] == "hf_vitrobust" and n in MODULES]


def _imports(module: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(module-level internal imports, imports inside functions) with line numbers."""
    tree = ast.parse(MODULES[module].read_text())
    top, inner = [], []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if in_function:
                    inner.append((child, child.lineno))
                else:
                    top.extend((m, child.lineno) for m in _resolve(module, child))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue
            else:
                nested = in_function or isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
                )
                visit(child, nested)

    visit(tree, False)
    return top, inner


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def test_every_module_has_a_layer():
    missing = sorted({_unit(m) for m in MODULES if _unit(m) and _unit(m) not in LAYERS})
    assert not missing, f"add these to LAYERS (and docs/architecture.md): {missing}"


def test_no_upward_or_sideways_imports():
    bad = []
    for module in MODULES:
        src = _unit(module)
        if not src:
            continue
        for target, line in _imports(module)[0]:
            dst = _unit(target)
            if not dst or dst == src:
                continue
            if LAYERS[dst] > LAYERS[src] or (
                LAYERS[dst] == LAYERS[src] and (src, dst) not in ALLOWED_SAME_LAYER
            ):
                bad.append(
                    f"{module}:{line} imports {target} ({src} L{LAYERS[src]} -> {dst} L{LAYERS[dst]})"
                )
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: sorted({t for t, _ in _imports(m)[0] if t != m}) for m in MODULES}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                dfs(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in graph:
        if module not in state:
            dfs(module, [])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_sit_at_module_top():
    bad = []
    for module in MODULES:
        for node, line in _imports(module)[1]:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            if not all(n.split(".")[0] in LAZY_ALLOWED for n in names):
                bad.append(f"{module}:{line} imports {names} inside a function")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= 650, f"{module} has {lines} lines; split it by concern (limit ~600)"


def test_every_module_is_listed_in_the_architecture_doc():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    paths = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
    missing = [p for p in paths if f"`{p}`" not in doc]
    assert not missing, f"list these in docs/architecture.md (Modules): {missing}"
