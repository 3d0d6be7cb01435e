"""Sphinx configuration for flask-sessionstore."""

from importlib.metadata import version as _version

project = "flask-sessionstore"
author = "The flask-sessionstore team"
copyright = "2026, The flask-sessionstore team"
release = _version("flask-sessionstore")
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Intersphinx needs the network, which builds here do not have: references to Flask's
# docs are written as plain text instead.
intersphinx_mapping: dict[str, tuple[str, None]] = {}
nitpicky = False
html_theme = "alabaster"
html_static_path: list[str] = []
exclude_patterns = ["_build"]
