"""A fingerprint of the project code a component runs, computed from its imports (not a hand-kept list).

TFX loads `preprocessing_fn`, `run_fn`, custom executors and function
components by import path, so it cannot see their code change. The wiring puts
this fingerprint into each such node's configuration (its `custom_config`, or
its executor spec's flags), which TFX hashes into the cache key: editing any
project module a component's code imports, directly or through others, makes
that component run again.

The import graph is read from the sources with `ast` (nothing is imported):
every `import x.y` and `from x import y` that names a module of one of the
project's packages, followed transitively, plus the `__init__.py` of every
package on the way (it runs on import).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os

from core.config import REPO_ROOT

PROJECT_PACKAGES = ("core", "serving", "release", "ingest", "components", "pipeline", "monitoring", "cli")


def module_file(module: str) -> str | None:
    """The source file of a project module (`core.idx` -> core/idx.py), or None if it is not one."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = os.path.join(REPO_ROOT, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _imported_modules(path: str, module: str) -> set[str]:
    """Project modules a source file names in its import statements (and their parent packages)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
                base = base.strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # parent packages run their __init__ first
            prefix = ".".join(parts[:i])
            if module_file(prefix):
                found.add(prefix)
    return found


@functools.cache
def module_closure(*modules: str) -> tuple[str, ...]:
    """Every project module that importing `modules` loads, sorted."""
    seen: set[str] = set()
    pending = [".".join(m.split(".")[:i]) for m in modules for i in range(1, len(m.split(".")) + 1)]
    while pending:
        module = pending.pop()
        path = module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        pending.extend(_imported_modules(path, module) - seen)
    return tuple(sorted(seen))


def code_fingerprint(*modules: str) -> str:
    """SHA-256 over the sources of every project module that importing `modules` loads."""
    digest = hashlib.sha256()
    for module in module_closure(*modules):
        with open(module_file(module), "rb") as f:
            digest.update(module.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()
