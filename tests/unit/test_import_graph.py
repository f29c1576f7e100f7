"""The package's import graph has no cycle, and no module hides an import inside a function.

Every import in sfu/ is read from the source (top level, ``if TYPE_CHECKING:`` blocks and
function bodies alike) and resolved to the module it names; a cycle among those modules, or an
import placed inside a function to break one, fails here.
"""

import ast
from pathlib import Path

SFU = Path(__file__).resolve().parents[2] / "sfu"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SFU.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in SFU.rglob("*.py")}


def resolve(importer: str, is_package: bool, module: str | None, level: int, names: list[str]) -> set[str]:
    if level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (level - 1)]
        target = ".".join([*base, module] if module else base)
    else:
        target = module or ""
    found = set()
    for name in names:
        if f"{target}.{name}" in MODULES:
            found.add(f"{target}.{name}")
    if target in MODULES:
        found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in MODULES}
            elif isinstance(node, ast.ImportFrom):
                targets |= resolve(name, is_package, node.module, node.level, [a.name for a in node.names])
        # A package's __init__ is imported by its submodules' own imports: not an edge of interest.
        edges[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The command line's entry point imports the server (aiortc, aiohttp) only for the subcommands
# that run it, so that `sfu token` and `sfu healthcheck` start at once.
DEFERRED_IMPORTS_ALLOWED = {"sfu.__main__"}


def test_no_module_imports_inside_a_function():
    hidden = []
    for name, path in MODULES.items():
        if name in DEFERRED_IMPORTS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("sfu")):
                        hidden.append(f"{name}.{node.name}")
    assert hidden == []
