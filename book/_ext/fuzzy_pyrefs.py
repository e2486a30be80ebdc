"""Sphinx extension: resolve short Python cross-references in docstrings of ``instabilities``.

Docstrings say :func:`train`, :class:`ConfigError` or :func:`curvature.lanczos` from inside other
modules. Sphinx looks such names up only relative to the current module, and nitpicky builds then warn.
When that lookup fails, this retries it as a "fuzzy" search (the behaviour of a leading dot,
:func:`.train`): any documented object whose full name ends with the target. Ambiguous targets still
produce Sphinx's "more than one target" warning; unknown ones still produce "reference target not found".

References through a package's public face (:func:`instabilities.curvature.lanczos`, documented in
``instabilities.curvature.eigen``) and to names a module imports are resolved by importing the object and
looking it up where it is defined.
"""
from __future__ import annotations


import importlib
import sys

PACKAGE = "instabilities"


def _lookup(target: str, modname: str | None):
    """The Python object a reference names, as imported: ``instabilities.a.b.name`` or ``name`` seen
    from the documented module ``modname`` (its globals, which include what it imports)."""
    parts = target.split(".")
    starts = []
    if parts[0] == PACKAGE:
        starts = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    elif modname:
        starts = [(modname, parts)]
    for mod_name, rest in starts:
        try:
            obj = importlib.import_module(mod_name)
        except ImportError:
            continue
        try:
            for p in rest:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def _canonical_names(target: str, modname: str | None) -> list[str]:
    """Where the object a reference names is documented: its defining module (a public face such as
    ``instabilities.curvature`` re-exports names whose documentation lives in ``curvature.eigen``), or,
    for data, every package module that holds the same object under the same name."""
    obj = _lookup(target, modname)
    if obj is None:
        return []
    names = []
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(mod, str) and isinstance(qual, str) and mod.startswith(PACKAGE):
        names.append(f"{mod}.{qual}")
    leaf = target.split(".")[-1]
    for name, module in list(sys.modules.items()):
        if name.startswith(PACKAGE) and module is not None and getattr(module, leaf, None) is obj:
            names.append(f"{name}.{leaf}")
    return names


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    domain = env.get_domain("py")
    retry = node.deepcopy()
    retry["refspecific"] = True
    found = domain.resolve_xref(env, node.get("refdoc", ""), app.builder, node["reftype"], node["reftarget"], retry,
                                contnode)
    if found is not None:
        return found
    for name in _canonical_names(node["reftarget"], node.get("py:module")):
        for reftype in (node["reftype"], "obj"):
            exact = node.deepcopy()
            exact["py:module"], exact["py:class"] = None, None
            found = domain.resolve_xref(env, node.get("refdoc", ""), app.builder, reftype, name, exact, contnode)
            if found is not None:
                return found
    return None


def setup(app):
    app.connect("missing-reference", _resolve)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
