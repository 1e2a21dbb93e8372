"""The package's import structure: the pure-Python reference stands alone, and no module imports in a cycle."""
import ast
import pathlib
import subprocess
import sys

import fastreplay

PKG = pathlib.Path(fastreplay.__file__).parent


def package_imports(module: str) -> set:
    """The fastreplay modules that `module` imports at run time, anywhere in the file (function-level imports
    included; those under ``if TYPE_CHECKING:`` are for type checkers only)."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastreplay."):
            found.add(node.module.split(".")[1])
    return found


def test_reference_needs_neither_the_buffer_nor_the_compiled_module():
    assert package_imports("reference") <= {"_args", "_fields", "_batch", "_reference_convert", "_sum_min_tree",
                                            "_episodes", "_reference_episodes", "_reference_tasks",
                                            "_reference_sequences"}
    assert package_imports("_reference_tasks") <= {"_args", "_tasks", "_batch", "_fields", "_reference_convert"}
    assert package_imports("_tasks") == set()
    assert package_imports("_reference_convert") | package_imports("_sum_min_tree") <= {"_args"}
    assert package_imports("_reference_episodes") <= {"_episodes", "_fields", "_reference_convert"}
    assert package_imports("_episodes") <= {"_fields"}
    assert package_imports("_reference_sequences") <= {"_args", "_sequences"}
    assert package_imports("_sequences") <= {"_batch", "_episodes"}


def test_importing_the_reference_loads_nothing_compiled():
    code = ("import sys, fastreplay.reference as r; r.ReplayBuffer(4, {'x': ((), 'int64')}).add(x=1); "
            "assert 'fastreplay._core' not in sys.modules and 'fastreplay.buffer' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('fastreplay'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_import_cycles():
    modules = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    graph = {m: package_imports(m) & set(modules) for m in modules}

    def visit(m, path):
        assert m not in path, f"import cycle: {' -> '.join(path + [m])}"
        for dep in graph[m]:
            visit(dep, path + [m])

    for m in modules:
        visit(m, [])
    assert "buffer" not in graph["_checkpoint"] and "buffer" not in graph["_memmap"]
