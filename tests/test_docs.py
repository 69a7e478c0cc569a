"""The docs run: every shell block in README.md and docs/*.md marked as cheap is executed.

A cheap block is a fenced ```bash block right after a line ``<!-- cheap -->`` (an HTML comment,
invisible on GitHub, a package index and the docs site): a few seconds of work on the committed
test photos, no data sets, no network. Each block runs with ``bash -euo pipefail`` in a fresh
folder holding a link to this checkout's ``tests/``, with ``faceage`` running this checkout's
code, so the files a block writes never land in the tree."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHEAP = re.compile(r"^<!-- cheap -->\n```bash\n(.*?)^```", re.M | re.S)


def cheap_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, m in enumerate(CHEAP.finditer(doc.read_text())):
            blocks.append((f"{doc.relative_to(ROOT)}#{i + 1}", m.group(1)))
    return blocks


BLOCKS = cheap_blocks()


def test_the_docs_mark_cheap_blocks():
    assert {name.split("#")[0] for name, _ in BLOCKS} >= {"README.md", "docs/batch.md"}


@pytest.mark.parametrize("name, script", BLOCKS, ids=[n for n, _ in BLOCKS])
def test_cheap_shell_block_runs(name, script, tmp_path):
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "faceage"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m faceage \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{name} failed ({r.returncode}):\n{script}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


def test_top_level_help_examples_parse():
    """``faceage --help``'s examples are complete commands (the train one names its manifest)."""
    from faceage.cli import build_parser
    from faceage.train.config import load_config

    epilog = build_parser([]).epilog
    examples = [shlex.split(line.strip())[1:] for line in epilog.splitlines() if line.startswith("  faceage ")]
    assert len(examples) >= 4
    for argv in examples:
        args, extra = build_parser(argv).parse_known_args(argv)
        if args.command == "train":
            overrides = list(args.overrides) + extra
            load_config(args.config, overrides)  # a known preset and valid keys
            # `faceage train --config cpu` alone failed with "set data.manifest"
            assert any(o.startswith("data.manifest=") for o in overrides), argv
