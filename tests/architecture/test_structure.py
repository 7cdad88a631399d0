"""The house rules of docs/architecture.md that import-linter cannot express.

The layer contracts themselves are in pyproject.toml (``lint-imports`` in
scripts/test.sh); these tests read the source and the installed distributions.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "triggers", "devstack", "cmremediate_cli")
MAX_LINES = 500
#: The one retry helper and the one HTTP pipeline: the only places that wait to retry.
SLEEPERS = {"shared/platform/retry.py", "shared/platform/http.py"}


def _sources(*packages: str) -> Iterator[Path]:
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            if "node_modules" not in path.parts:
                yield path


def _imports(path: Path) -> Iterator[str]:
    """Every module an import statement in ``path`` names, lazy imports included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child) & modules
                    work.append((child, iter(sorted(imported))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_anywhere():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c"):
        graph.add_module(name)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="a")
    graph.add_import(importer="b", imported="c")
    assert _cycles(graph, {"a", "b", "c"}) == [["a", "b"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_longer_than_the_limit(package):
    long = {
        str(path.relative_to(REPO)): lines
        for path in _sources(package)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_only_the_triggers_import_azure_functions():
    importers = {
        str(path.relative_to(REPO))
        for path in [*_sources("shared", "cmremediate_cli"), REPO / "function_app.py"]
        if any(
            name == "azure.functions" or name.startswith("azure.functions.")
            for name in _imports(path)
        )
    }
    assert importers == {"function_app.py"}


def test_only_the_retry_helper_and_the_http_pipeline_wait_to_retry():
    """A ``sleep`` anywhere else in shared/ is a retry loop of its own."""
    sleeping = set()
    for path in _sources("shared"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            called = node.func if isinstance(node, ast.Call) else None
            name = (
                called.attr
                if isinstance(called, ast.Attribute)
                else called.id
                if isinstance(called, ast.Name)
                else None
            )
            if name == "sleep":
                sleeping.add(str(path.relative_to(REPO)))
    assert sleeping <= SLEEPERS


def _distribution_of(module: str, owners: dict[str, str]) -> str | None:
    """The installed distribution that holds ``module``, or None for the standard library
    and our own packages."""
    if module.split(".")[0] in (*PACKAGES, "function_app"):
        return None
    while module:
        try:
            spec = find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin not in (None, "built-in", "frozen"):
            return owners.get(str(Path(spec.origin).resolve()))
        module = module.rpartition(".")[0]
    return None


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


#: Listed in requirements.txt for the Python worker, which imports them on the app's
#: behalf: the Azure Monitor distro with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY.
WORKER_LOADED = {"azure-monitor-opentelemetry"}


def test_requirements_list_exactly_what_the_function_app_imports():
    owners = {}
    for dist in metadata.distributions():
        for file in dist.files or ():
            owners[str(Path(dist.locate_file(file)).resolve())] = _normalized(dist.metadata["Name"])
    imported = {
        dist
        for path in [REPO / "function_app.py", *_sources("shared", "triggers")]
        for name in _imports(path)
        if (dist := _distribution_of(name, owners)) is not None
    }
    listed = {
        _normalized(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert listed == imported | WORKER_LOADED


def test_every_exception_lives_in_errors_and_its_tree():
    """shared/errors.py holds every exception class, each drawn in the module's tree."""
    import shared.errors

    elsewhere = set()
    for path in _sources("shared"):
        if path.name == "errors.py" and path.parent.name == "shared":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                (isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception")))
                or (isinstance(base, ast.Name) and base.id in vars(shared.errors))
                for base in node.bases
            ):
                elsewhere.add(f"{path.relative_to(REPO)}:{node.name}")
    assert elsewhere == set()
    classes = {
        name
        for name, value in vars(shared.errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    drawn = set(re.findall(r"[├└]── (\w+)", shared.errors.__doc__ or "")) | {"CmRemediateError"}
    assert classes == drawn
