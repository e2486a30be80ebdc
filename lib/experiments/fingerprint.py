"""Code fingerprints: a hash of what a run function computes, so that editing it marks stored results STALE.

:func:`code_fingerprint` hashes the normalized source of a function and, transitively, of every
function and class of the ``instabilities`` package it references. Normalized: the syntax tree with
docstrings removed, written out without line numbers, so formatting and comments do not count.
References are followed through

* the names a code object loads (``co_names``), looked up in its module's globals;
* attributes of modules of the package (``curvature.lanczos``, ``sm.train``): any name the code
  loads that is an attribute of a referenced package module;
* nested code (inner functions, lambdas, comprehensions), closures, ``functools.partial``;
* classes (their whole source, methods included) and the functions and classes their methods use;
* module constants (numbers, strings, tuples, dicts: their ``repr``, and the functions they hold).

Not followed: anything outside the package (torch, numpy, ...), and the infrastructure in
:data:`STOP_MODULES` (configs and their validation, result files, the registry, reproduction, plotting,
widgets, the command line), whose edits do not change what a run computes. The fingerprint is an
over-approximation: editing a function the run never calls but whose name it loads also changes it.
An explicit ``revision=`` on :func:`~instabilities.experiments.register` covers what the
fingerprint cannot see (a changed data file, a library upgrade).

Stable across processes and Python versions (the tree is written by ``_dump``, not ``ast.dump``,
whose format changes between versions); cached per code object.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import textwrap
import types
from typing import Any

PACKAGE = __name__.split(".")[0]  # "instabilities"
#: Infrastructure modules whose code does not enter a fingerprint.
STOP_MODULES = frozenset(
    f"{PACKAGE}.{m}"
    for m in (
        "config",
        "results",
        "plotting",
        "widgets",
        "cli",
        "__main__",
        "experiments",
        "experiments.registry",
        "experiments.reproduce",
        "experiments.fingerprint",
    )
)
_CONSTANTS = (int, float, complex, str, bytes, bool, type(None))


def _in_package(module: str | None) -> bool:
    return bool(module) and (module == PACKAGE or module.startswith(PACKAGE + ".")) and module not in STOP_MODULES


def _dump(node: Any) -> str:
    """The syntax tree as text: node types and fields, no positions, no empty or ``None`` fields."""
    if isinstance(node, ast.AST):
        parts = []
        for field in node._fields:
            value = getattr(node, field, None)
            if value is None or value == []:
                continue
            parts.append(f"{field}={_dump(value)}")
        return f"{type(node).__name__}({','.join(parts)})"
    if isinstance(node, list):
        return "[" + ",".join(_dump(v) for v in node) + "]"
    return repr(node)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalized_source(obj: Any) -> str:
    """The normalized source of a function or class (see the module docstring)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError, IndentationError):  # no source (built at run time, a lambda in a call)
        return f"<no source: {getattr(obj, '__qualname__', obj)!s}>"
    return _dump(_strip_docstrings(tree))


@functools.cache
def _source_digest(obj: Any) -> str:
    return hashlib.sha256(normalized_source(obj).encode()).hexdigest()


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _key(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def code_fingerprint(fn: Any) -> str:
    """Hash of ``fn``'s normalized source and of every package function/class it reaches (16 hex digits).

    ``fn`` itself is always included, even outside the package (a test's run function).
    """
    blob = "\n".join(f"{k}={v}" for k, v in sorted(_parts(fn).items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _parts(fn: Any) -> dict[str, str]:
    parts: dict[str, str] = {}
    seen: set[int] = set()

    def visit(obj: Any, root: bool = False, depth: int = 0) -> None:
        if depth > 4 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            parts[f"partial:{_key(obj.func)}"] = repr((obj.args, sorted(obj.keywords.items())))
            visit(obj.func, root, depth)
            for v in (*obj.args, *obj.keywords.values()):
                visit(v, False, depth + 1)
            return
        if isinstance(obj, (staticmethod, classmethod)):
            return visit(obj.__func__, root, depth)
        if isinstance(obj, functools.cached_property):
            return visit(obj.func, root, depth)
        if callable(obj) and not isinstance(obj, type) and "__wrapped__" in getattr(obj, "__dict__", {}):
            return visit(inspect.unwrap(obj), root, depth)  # functools.lru_cache, functools.wraps
        if isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                if f is not None:
                    visit(f, root, depth)
            return
        if isinstance(obj, (list, tuple, set, frozenset, dict)):
            for v in obj.values() if isinstance(obj, dict) else obj:
                if not isinstance(v, _CONSTANTS):
                    visit(v, False, depth + 1)
            return
        if isinstance(obj, types.FunctionType):
            obj = inspect.unwrap(obj)
            if not (root or _in_package(obj.__module__)) or obj.__code__.co_filename.startswith("<"):
                return  # outside the package, or generated (a dataclass's __init__): nothing to read
            parts[_key(obj)] = _source_digest(obj)
            follow_code(obj.__code__, obj.__globals__, obj.__closure__ or ())
            return
        if isinstance(obj, type):
            if not _in_package(obj.__module__):
                return
            parts[_key(obj)] = _source_digest(obj)
            for base in obj.__mro__[1:]:
                visit(base, False, depth)
            for member in vars(obj).values():
                if isinstance(
                    member, (types.FunctionType, staticmethod, classmethod, property, functools.cached_property)
                ):
                    visit(member, True, depth)  # methods: defined in the class, whatever their __module__
            return
        if _in_package(getattr(type(obj), "__module__", None)) and not isinstance(obj, types.ModuleType):
            visit(type(obj), False, depth)  # an instance of a package class (a default config, ...)

    def follow_code(code: types.CodeType, globs: dict[str, Any], closure: tuple) -> None:
        names: set[str] = set()
        for c in _code_objects(code):
            names.update(c.co_names)
        for cell in closure:
            try:
                visit(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        modules: list[types.ModuleType] = []
        for name in sorted(names):
            if name not in globs:
                continue
            value = globs[name]
            if isinstance(value, types.ModuleType):
                modules.append(value)
            elif isinstance(value, _CONSTANTS) or (
                isinstance(value, (tuple, frozenset)) and all(isinstance(v, _CONSTANTS) for v in value)
            ):
                parts[f"{globs.get('__name__')}:{name}"] = repr(
                    sorted(value, key=repr) if isinstance(value, frozenset) else value
                )  # frozenset order varies by process
            else:
                visit(value)
        done: set[str] = set()
        while modules:  # module attributes: curvature.lanczos, instabilities.curvature.eigen.lanczos
            mod = modules.pop()
            if mod.__name__ in done or not (mod.__name__ == PACKAGE or mod.__name__.startswith(PACKAGE + ".")):
                continue
            done.add(mod.__name__)
            for name in sorted(names):
                value = getattr(mod, name, None)
                if isinstance(value, types.ModuleType):
                    modules.append(value)
                elif value is not None and not isinstance(value, _CONSTANTS):
                    visit(value)

    visit(fn, root=True)
    return parts


def reachable(fn: Any) -> list[str]:
    """What enters :func:`code_fingerprint`: functions, classes, constants and partials (for inspection)."""
    return sorted(_parts(fn))
