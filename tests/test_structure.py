"""Import directions inside the package, read from the source (nothing is imported).

* The model code (``model.py``, ``eg3d/``, ``encoders/``) does not reach ``io/``, which loads and saves it
  (``io/model_checkpoints.py`` imports ``model.py``, ``io/checkpoints.py`` the generator).
* ``eval/protocol.py`` does not reach ``demo.py``, which runs the protocol's metrics; both take the bundled model
  and the held-out poses from ``bundled.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "triplanenet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the triplanenet modules it imports anywhere (also inside functions), plus their parent packages
    (importing ``a.b.c`` runs ``a/b/__init__.py``); the root package, which imports everything, is left out."""
    sources = {_module_name(path): path for path in PACKAGE.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in sources:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("triplanenet"):
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("triplanenet")]
            else:
                continue
            for name in names:
                target = known(name)
                if target is None:
                    continue
                pieces = target.split(".")
                targets.update(".".join(pieces[:i]) for i in range(2, len(pieces) + 1))
        targets.discard(module)
        graph[module] = {t for t in targets if t in sources}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from ``start``, mapped to the module that imports it on one path."""
    parent: dict[str, str] = {}
    stack = [start]
    while stack:
        module = stack.pop()
        for target in graph.get(module, ()):
            if target not in parent and target != start:
                parent[target] = module
                stack.append(target)
    return parent


def _path(parent: dict[str, str], start: str, end: str) -> str:
    chain = [end]
    while chain[-1] != start:
        chain.append(parent[chain[-1]])
    return " -> ".join(reversed(chain))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _import_graph()


@pytest.mark.parametrize(
    ("start", "forbidden"),
    [
        ("triplanenet.model", "triplanenet.io"),
        ("triplanenet.eg3d", "triplanenet.io"),
        ("triplanenet.eg3d.shapes", "triplanenet.io"),
        ("triplanenet.encoders", "triplanenet.io"),
        ("triplanenet.eval.protocol", "triplanenet.demo"),
        ("triplanenet.bundled", "triplanenet.demo"),
        ("triplanenet.distributed", "triplanenet.cli"),
        ("triplanenet.distributed", "triplanenet.model"),
    ],
)
def test_import_direction(graph: dict[str, set[str]], start: str, forbidden: str) -> None:
    assert start in graph
    parent = _reachable(graph, start)
    hits = sorted(m for m in parent if m == forbidden or m.startswith(forbidden + "."))
    assert not hits, f"{start} reaches {forbidden}: {_path(parent, start, hits[0])}"


def test_the_other_directions_exist(graph: dict[str, set[str]]) -> None:
    # The edges the tests above keep one-way (so the graph reading really sees imports).
    assert "triplanenet.model" in graph["triplanenet.io.model_checkpoints"]
    assert "triplanenet.eval.protocol" in _reachable(graph, "triplanenet.demo")


def test_public_names_stay_where_the_readme_documents_them() -> None:
    from triplanenet import bundled, demo
    from triplanenet import mesh as mesh_module
    from triplanenet.io import mesh as io_mesh

    assert io_mesh.Mesh is mesh_module.Mesh
    for name in ("DEMO_POSES", "DEMO_SEED", "default_assets_dir", "load_default_model", "load_default_sigma_net"):
        assert getattr(demo, name) is getattr(bundled, name)
    assert demo.load_default_identity_network is bundled.load_default_identity_network


def test_readme_python_example_imports_and_calls_what_exists() -> None:
    from triplanenet.inversion import Inversion

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [part.split("```", 1)[0] for part in readme.split("```python\n")[1:]]
    assert blocks, "README has no Python example"
    for block in blocks:
        tree = ast.parse(block)
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), "README.md", "exec"), {})  # names must exist
        used = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "inversion"
        }
        assert used and all(hasattr(Inversion, name) for name in used), sorted(used)
