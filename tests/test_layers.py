"""The layers of the package, checked from the source: what may import what."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import rentahal

PACKAGE = Path(rentahal.__file__).parent
# The backend adapters speak worker protocols; they are handed an `Endpoint` and know
# nothing of the broker that calls them: its live registry, scheduler, APIs or bus.
ABOVE_BACKENDS = ("rentahal.routing", "rentahal.scheduler", "rentahal.api", "rentahal.bus")


def _source(module: str) -> Path | None:
    """The file of a project module (a package's `__init__.py`), or None if there is none."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _named(module: str, path: Path, nodes: Iterable[ast.AST]) -> set[str]:
    """The project modules the import statements among `nodes` name (`from a.b import c`
    names `a.b`, and `a.b.c` if that is a module), without the packages above them."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)  # maybe submodules
    return {
        name
        for name in named
        if name.startswith("rentahal.") and name != module and _source(name) is not None
    }


def _imports(module: str, path: Path) -> set[str]:
    """The project modules `path` imports anywhere in it (functions and TYPE_CHECKING
    blocks included), with the packages that importing them runs."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for name in _named(module, path, ast.walk(tree)):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {name for name in found if _source(name) is not None}


def _reachable(start: set[str]) -> dict[str, str]:
    """Every project module importing `start` runs, each with the module that imported it
    first ("" for the start)."""
    via: dict[str, str] = dict.fromkeys(start, "")
    queue = sorted(start)
    while queue:
        module = queue.pop()
        path = _source(module)
        assert path is not None, module
        for imported in sorted(_imports(module, path)):
            if imported not in via:
                via[imported] = module
                queue.append(imported)
    return via


def _package_modules(package: str) -> set[str]:
    folder = PACKAGE.joinpath(*package.split(".")[1:])
    return {f"{package}.{path.stem}".removesuffix(".__init__") for path in folder.glob("*.py")}


def _chain(via: dict[str, str], module: str) -> str:
    chain = [module]
    while via[chain[-1]]:
        chain.append(via[chain[-1]])
    return " ← ".join(chain)


def test_backends_import_nothing_of_the_broker_above_them() -> None:
    """No adapter imports the registry, scheduler, APIs or bus, directly or through the
    project modules it does import."""
    via = _reachable(_package_modules("rentahal.backends"))
    upward = [
        _chain(via, module)
        for module in via
        if any(module == layer or module.startswith(f"{layer}.") for layer in ABOVE_BACKENDS)
    ]
    assert not upward, "backends reach above themselves:\n" + "\n".join(sorted(upward))


def test_core_imports_nothing_of_the_project() -> None:
    """`rentahal.core` is the bottom layer: every other package may use it because it pulls
    in nothing else of the project."""
    via = _reachable(_package_modules("rentahal.core"))
    outside = [
        _chain(via, module)
        for module in via
        if module != "rentahal" and not module.startswith("rentahal.core")
    ]
    assert not outside, "core imports the project:\n" + "\n".join(sorted(outside))


def test_the_bus_imports_only_core_and_store() -> None:
    """`rentahal.bus` is the wire (envelopes, events, views, the hub): it reads the store's
    rows and speaks the core vocabulary, and knows nothing of routing, the scheduler or the
    services that use it."""
    via = _reachable(_package_modules("rentahal.bus"))
    allowed = ("rentahal.bus", "rentahal.core", "rentahal.store")
    outside = [
        _chain(via, module)
        for module in via
        if module != "rentahal" and not module.startswith(allowed)
    ]
    assert not outside, "the bus reaches beyond core and store:\n" + "\n".join(sorted(outside))


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """The statements a module runs when imported: its body, and the bodies of its `if`
    (`if TYPE_CHECKING:` included: a type checker follows those imports too), `try` and
    `with` blocks, but not the bodies of its functions and classes."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If):
            pending += [*node.body, *node.orelse]
        elif isinstance(node, ast.Try):
            pending += [*node.body, *node.orelse, *node.finalbody]
            pending += [s for handler in node.handlers for s in handler.body]
        elif isinstance(node, ast.With):
            pending += node.body


def _import_graph() -> dict[str, set[str]]:
    """Every project module, with the project modules its top level imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts).removesuffix(".__init__")
        graph[module] = _named(module, path, _top_level(ast.parse(path.read_text(), str(path))))
    return graph


def _tangles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm):
    every module in one reaches every other, so each holds at least one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph.get(module, ())):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = {stack.pop()}
            while module not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _cycle(graph: dict[str, set[str]], tangle: frozenset[str]) -> str:
    """One shortest cycle through the tangle's first module, as `a → b → … → a`."""
    start = min(tangle)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for module in frontier:
            for imported in sorted(graph[module] & tangle):
                if imported == start:
                    path = [module]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return " → ".join([start, *reversed(path[:-1]), start])
                if imported not in came_from:
                    came_from[imported] = module
                    following.append(imported)
        frontier = following
    raise AssertionError(f"no cycle in {sorted(tangle)}")


def test_no_import_cycles() -> None:
    """No project module imports itself back through others, counting what a module runs
    when imported and its `if TYPE_CHECKING:` imports (a cycle through annotations is a
    dependency all the same). Imports inside functions are skipped: they are how a module
    defers a heavy or optional dependency to the call that needs it (`rentahal.cli`)."""
    graph = _import_graph()
    cycles = [_cycle(graph, tangle) for tangle in _tangles(graph)]
    assert not cycles, "import cycles between project modules:\n" + "\n".join(sorted(cycles))
