"""griffe extension for the API reference: Sphinx roles in docstrings (``:class:`x.Y```,
``:mod:`x```, ``:func:`~x.y```) rendered as inline code, since the docs are Markdown."""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|exc|obj):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(lambda m: f"`{m.group(1)}`", obj.docstring.value)
