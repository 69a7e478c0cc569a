"""mkdocs hook: the site's home page is README.md and its changelog CHANGELOG.md, read from the
repository root at build time (one copy of each text), with links into docs/ made site-relative."""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}


def site_relative(markdown: str) -> str:
    """``](docs/x.md)`` -> ``](x.md)``: README's links point into docs/, the site's pages live there."""
    return re.sub(r"\]\(docs/", "](", markdown)


def on_files(files, config):
    for name, source in PAGES.items():
        files.append(File.generated(config, name, content=site_relative((ROOT / source).read_text())))
    return files
