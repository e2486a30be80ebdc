"""Sphinx extension: resolve short Python cross-references in docstrings of ``instabilities``.

Docstrings say :func:`train`, :class:`ConfigError` or :func:`curvature.lanczos` from inside other
modules. Sphinx looks such names up only relative to the current module, and nitpicky builds then warn.
When that lookup fails, this retries it as a "fuzzy" search (the behaviour of a leading dot,
:func:`.train`): any documented object whose full name ends with the target. Ambiguous targets still
produce Sphinx's "more than one target" warning; unknown ones still produce "reference target not found".
"""
from __future__ import annotations


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    retry = node.deepcopy()
    retry["refspecific"] = True
    return env.get_domain("py").resolve_xref(env, node.get("refdoc", ""), app.builder, node["reftype"],
                                             node["reftarget"], retry, contnode)


def setup(app):
    app.connect("missing-reference", _resolve)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
