"""The package's layers: imports point down only, and no module imports itself back.

Every import counts, including those inside functions (they hide a cycle from
Python, not from a reader). A layer may import any layer below it; modules of
one layer may import each other as long as that forms no cycle.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module belongs to the first layer whose prefix it has.
LAYERS = [
    ("leaves", ("analyzer.errors", "analyzer.anomalies", "analyzer.clock", "analyzer.text", "analyzer.core",
                "analyzer")),
    ("msnp", ("analyzer.msnp",)),
    ("analysis", ("analyzer.analysis",)),
    ("plugin api", ("analyzer.plugins",)),
    ("first-party plugins", ("msnp_analyzer_plugins",)),
    ("outputs", ("analyzer.outputs",)),
    ("capture", ("analyzer.capture",)),
    ("scripted service", ("analyzer.scripted",)),
    ("cli", ("analyzer.cli", "analyzer.__main__")),
]


def modules() -> dict[str, Path]:
    found = {}
    for base, name in ((ROOT / "analyzer", "analyzer"), (ROOT / "plugins", "msnp_analyzer_plugins")):
        for path in base.rglob("*.py"):
            parts = [name, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (module.startswith(prefix + ".") and prefix != "analyzer"):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[0]


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every first-party module `module` imports, wherever the import statement sits."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                out.add(target)  # importing one's own parent package is how Python loads it anyway
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer_and_imports_point_down():
    upward = []
    for module, deps in graph().items():
        mine = layer_of(module)
        for dep in deps:
            if layer_of(dep) > mine:
                upward.append(f"{module} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_nothing_imports_the_cli():
    offenders = [m for m, deps in graph().items() if not m.startswith(("analyzer.cli", "analyzer.__main__"))
                 and any(d.startswith("analyzer.cli") for d in deps)]
    assert offenders == []


def test_the_codec_knows_no_sockets_files_or_rich():
    banned = {"socket", "asyncio", "rich", "scapy", "mitmproxy", "open"}
    for name, path in modules().items():
        if not name.startswith("analyzer.msnp"):
            continue
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for n in names:
                    assert n.split(".")[0] not in banned, f"{name} imports {n}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                raise AssertionError(f"{name} opens a file")


def test_pyproject_lists_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert folders == listed


def test_a_cycle_and_an_upward_import_are_caught(tmp_path):
    """The checks themselves: a fake graph with one of each fails them."""
    assert layer_of("analyzer.msnp.reader") < layer_of("analyzer.analysis.run") < layer_of("analyzer.cli.main")
    assert layer_of("analyzer.anomalies") == 0 and layer_of("analyzer.capture.proxy.relay") == 6
    known = {"analyzer.msnp.reader": tmp_path / "r.py", "analyzer.cli.main": tmp_path / "m.py"}
    (tmp_path / "r.py").write_text("def f():\n    from analyzer.cli.main import main\n")
    assert imports("analyzer.msnp.reader", known["analyzer.msnp.reader"], known) == {"analyzer.cli.main"}
