"""The package's layering, read from its source: no import cycle, small ORM contract
ABCs, small core and translator modules, and no ORM imported outside ``orm/``.

The import graph holds an edge from module A to module B of the package for every
``import`` and ``from ... import`` statement in A that names B, wherever the statement
sits: at module level, inside a function or a method (a function-local import is a
dependency deferred, not removed), under ``try``. Relative imports are resolved to
module names; ``from . import x`` is an edge to the submodule ``x`` when there is one,
else to the package whose attribute it reads. Importing a submodule runs its packages'
``__init__`` first, so those count too, except the importer's own packages (already
being imported when it runs); a package ``__init__`` importing its own submodules counts
like any module. ``importlib.import_module`` with a literal name counts as an import;
with a name built at run time (an f-string), as an import of every module its constant
prefix allows.

Only imports under ``if TYPE_CHECKING:`` are left out of the graph: they never run (the
type checker reads them; the interpreter skips the block), so they make no cycle.
The rule that no module outside ``orm/`` imports an ORM counts them as well: a core
module typed against an ORM depends on it all the same.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "flask_sessionstore"

#: The top-level names of the ORMs (and their drivers) the package supports.
ORM_PACKAGES = frozenset({
    "sqlalchemy", "flask_sqlalchemy", "peewee", "playhouse", "pony", "mongoengine",
    "pymongo", "bson",
})
MAX_ABSTRACT_METHODS = 12
MAX_DATASTORE_LINES = 500
MAX_TRANSLATOR_LINES = 350


# -- reading the source -------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import found in a module: what it names and where."""

    target: str
    line: int
    #: Whether it sits under ``if TYPE_CHECKING:`` (it never runs).
    type_checking: bool
    #: For ``from P import a, b``: the names read from P (empty for ``import P``).
    names: tuple[str, ...] = ()
    #: For ``import_module(f"prefix{...}")``: the name is only known up to this prefix.
    prefix_only: bool = False


@dataclass
class Package:
    """The modules of a package directory, by dotted name, and the imports of each."""

    root: Path
    paths: dict[str, Path] = field(default_factory=dict)
    imports: dict[str, list[Import]] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path) -> Package:
        package = cls(root)
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            package.paths[".".join(parts)] = path
        for name, path in package.paths.items():
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            package.imports[name] = list(package._imports(name, tree))
        return package

    def is_package(self, name: str) -> bool:
        return self.paths[name].name == "__init__.py"

    def anchor(self, module: str, level: int) -> str:
        """The package a relative import of ``level`` dots in ``module`` starts from."""
        base = module if self.is_package(module) else module.rpartition(".")[0]
        for _ in range(level - 1):
            base = base.rpartition(".")[0]
        return base

    def _imports(self, module: str, tree: ast.AST) -> Iterator[Import]:
        for node, type_checking in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(alias.name, node.lineno, type_checking)
            elif isinstance(node, ast.ImportFrom):
                base = self.anchor(module, node.level) if node.level else ""
                target = ".".join(part for part in (base, node.module or "") if part)
                names = tuple(alias.name for alias in node.names if alias.name != "*")
                yield Import(target, node.lineno, type_checking, names)
            elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
                found = self._import_module_target(module, node)
                if found is not None:
                    target, prefix_only = found
                    yield Import(target, node.lineno, type_checking, prefix_only=prefix_only)

    def _import_module_target(self, module: str, call: ast.Call) -> tuple[str, bool] | None:
        first = call.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            name, prefix_only = first.value, False
        elif (isinstance(first, ast.JoinedStr) and first.values
              and isinstance(first.values[0], ast.Constant)):
            name, prefix_only = str(first.values[0].value), True
        else:
            return None  # a name computed some other way: nothing to resolve
        level = len(name) - len(name.lstrip("."))
        if not level:
            return name, prefix_only
        anchor_node = call.args[1] if len(call.args) > 1 else next(
            (k.value for k in call.keywords if k.arg == "package"), None
        )
        if isinstance(anchor_node, ast.Name) and anchor_node.id == "__name__":
            # import_module anchors at the package named: in an __init__, __name__ is it.
            anchor = module
        elif isinstance(anchor_node, ast.Name) and anchor_node.id == "__package__":
            anchor = module if self.is_package(module) else module.rpartition(".")[0]
        elif isinstance(anchor_node, ast.Constant) and isinstance(anchor_node.value, str):
            anchor = anchor_node.value
        else:
            return None
        for _ in range(level - 1):
            anchor = anchor.rpartition(".")[0]
        return f"{anchor}.{name[level:]}", prefix_only

    # -- the graph --------------------------------------------------------------------

    def _reached(self, importer: str, target: str) -> set[str]:
        """The package's modules that importing ``target`` runs, seen from ``importer``:
        the module and those of its packages that are not the importer's own."""
        own = {importer.rsplit(".", depth)[0] for depth in range(importer.count(".") + 1)}
        reached = set()
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            if name in self.paths and (name == target or name not in own):
                reached.add(name)
        return reached

    def edges(self) -> dict[tuple[str, str], str]:
        """Every runtime import edge between the package's modules, with where it is
        made (``path:line``)."""
        found: dict[tuple[str, str], str] = {}
        for module, imports in self.imports.items():
            for item in imports:
                if item.type_checking:
                    continue
                targets: set[str] = set()
                if item.prefix_only:
                    for name in self.paths:
                        if name.startswith(item.target) and name != item.target:
                            targets |= self._reached(module, name)
                elif item.names:
                    for name in item.names:
                        submodule = f"{item.target}.{name}"
                        if submodule in self.paths:
                            targets |= self._reached(module, submodule)
                        elif item.target in self.paths:
                            # An attribute of the package or module: its code must have
                            # run, even when it is one of the importer's own packages.
                            targets.add(item.target)
                            targets |= self._reached(module, item.target)
                else:
                    targets |= self._reached(module, _longest_module(self, item.target))
                where = f"{self.paths[module].relative_to(self.root.parent)}:{item.line}"
                for target in targets - {module, ""}:
                    found.setdefault((module, target), where)
        return found


def _longest_module(package: Package, dotted: str) -> str:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in package.paths:
            return name
    return ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id == "import_module") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )


def _walk(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node, with whether it sits under ``if TYPE_CHECKING:`` (the ``else`` of
    such an ``if`` runs, so it does not)."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, type_checking = stack.pop()
        yield node, type_checking
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend((child, True) for child in node.body)
            stack.extend((child, type_checking) for child in node.orelse)
        else:
            stack.extend((child, type_checking) for child in ast.iter_child_nodes(node))


def _graph(edges: dict[tuple[str, str], str]) -> dict[str, list[str]]:
    graph: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        graph.setdefault(source, []).append(target)
        graph.setdefault(target, [])
    return graph


def cycle_groups(edges: dict[tuple[str, str], str]) -> list[list[str]]:
    """The groups of two or more modules that import one another, directly or not (the
    strongly connected components, by Tarjan's algorithm), in a stable order."""
    graph = _graph(edges)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(groups)


def cycles(edges: dict[tuple[str, str], str]) -> list[list[str]]:
    """One shortest cycle (its first module repeated at the end) in each group."""
    graph = _graph(edges)
    return [_cycle_in(graph, group) for group in cycle_groups(edges)]


def _cycle_in(graph: dict[str, list[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in graph[node]:
            if target == start:
                return [*paths[node], start]
            if target in members and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return [*group, start]  # unreachable for a strongly connected group


def describe(group: list[str], edges: dict[tuple[str, str], str]) -> str:
    """One cycle of ``group``, then every import between its modules, with where it is."""
    cycle = _cycle_in(_graph(edges), group)
    inside = [f"  {a} -> {b}  ({where})" for (a, b), where in sorted(edges.items())
              if a in group and b in group]
    return (f"cycle: {' -> '.join(cycle)}\n"
            f"group of {len(group)} modules importing one another: {', '.join(group)}\n"
            + "\n".join(inside))


# -- the rules ----------------------------------------------------------------------------


def test_the_import_graph_has_no_cycle() -> None:
    edges = Package.read(PACKAGE_DIR).edges()
    found = cycle_groups(edges)
    report = "\n".join(describe(group, edges) for group in found)
    print(report or "no cycle")
    assert not found, f"{len(found)} import cycle(s) in flask_sessionstore:\n{report}"


def test_each_contract_abc_has_at_most_12_abstract_methods_none_underscored() -> None:
    from flask_sessionstore import contract

    abcs: list[Any] = [
        value for value in vars(contract).values()
        if inspect.isclass(value) and value.__module__ == contract.__name__
        and inspect.isabstract(value)
    ]
    assert {cls.__name__ for cls in abcs} >= {"ModelStore", "SessionRows"}
    for cls in abcs:
        abstract = sorted(cls.__abstractmethods__)
        assert len(abstract) <= MAX_ABSTRACT_METHODS, (cls.__name__, abstract)
        private = [name for name in abstract if name.startswith("_")]
        assert not private, f"{cls.__name__} has underscore-named abstract methods: {private}"


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_datastore_module_is_at_most_500_lines() -> None:
    lines = _lines(PACKAGE_DIR / "datastore.py")
    assert lines <= MAX_DATASTORE_LINES, f"flask_sessionstore/datastore.py has {lines} lines"


@pytest.mark.parametrize(
    "path",
    [path for path in sorted((PACKAGE_DIR / "orm").glob("*.py"))
     if not path.name.startswith("_")],
    ids=lambda path: path.name,
)
def test_each_orm_translator_module_is_at_most_350_lines(path: Path) -> None:
    lines = _lines(path)
    assert lines <= MAX_TRANSLATOR_LINES, f"flask_sessionstore/orm/{path.name} has {lines} lines"


def test_no_module_outside_orm_imports_an_orm() -> None:
    package = Package.read(PACKAGE_DIR)
    offenders = []
    for module, imports in package.imports.items():
        if module.startswith("flask_sessionstore.orm.") or module == "flask_sessionstore.orm":
            continue
        for item in imports:
            if item.target.split(".")[0] in ORM_PACKAGES:
                where = package.paths[module].relative_to(PACKAGE_DIR.parent)
                offenders.append(f"{where}:{item.line} imports {item.target}")
    assert not offenders, "\n".join(offenders)


# -- the graph builder itself, on a package made for it -------------------------------------


def test_the_graph_sees_local_relative_and_dynamic_imports_but_not_type_checking_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "from .a import A\n"
                       "from importlib import import_module\n"
                       "def __getattr__(name):\n"
                       "    return import_module(f'.sub.{name}', __name__)\n",
        "a.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .b import B\nelse:\n    from . import c\n"
                "class A:\n    def f(self):\n        from .b import B\n        return B\n",
        "b.py": "import pkg.c\n",
        "c.py": "X = 1\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
        "sub/__init__.py": "",
        "sub/e.py": "from .. import A\nfrom ..c import X\n",
    }
    for name, source in sources.items():
        (root / name).write_text(source)
    edges = set(Package.read(root).edges())
    assert edges == {
        ("pkg", "pkg.a"),                 # a package importing its submodule
        ("pkg", "pkg.sub"),               # import_module(f".sub.{name}"): the package...
        ("pkg", "pkg.sub.e"),             # ...and every module the prefix allows
        ("pkg.a", "pkg.c"),               # from . import c (the else branch runs)
        ("pkg.a", "pkg.b"),               # a function-local import
        ("pkg.b", "pkg.c"),               # import pkg.c (pkg is b's own package)
        ("pkg.sub.e", "pkg"),             # from .. import A reads the package's attribute
        ("pkg.sub.e", "pkg.c"),
    }
    found = cycles(dict.fromkeys(edges, "?"))
    assert found == [["pkg", "pkg.sub.e", "pkg"]]
