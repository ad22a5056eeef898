"""A Sphinx extension the book's build loads (``_config.yml``: ``sphinx.extra_extensions``).

Each page gets every inline script once. sphinx-thebe 0.3.1 and sphinx-togglebutton register inline
scripts after the HTML builder has read its registry, and Sphinx 7.4 then emits each twice per page (once
with ``filename=None``, once with ``''``, which it does not take for equal). togglebutton's ``var`` is
harmless twice; thebe's second ``const THEBE_JS_URL`` is a ``SyntaxError`` in every reader's browser
console, which the browser check (fer_lib.browser_check) reports. Scripts that load a file are left alone.
"""
from __future__ import annotations


def _inline_once(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        body = script.attributes.get("body") if not script.filename else None
        if body is not None:
            key = (body, tuple(sorted((k, v) for k, v in script.attributes.items() if k != "body")))
            if key in seen:
                continue
            seen.add(key)
        kept.append(script)
    scripts[:] = kept  # the builder's own list: Sphinx renders (and afterwards restores) it


def setup(app):
    app.connect("html-page-context", _inline_once)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
