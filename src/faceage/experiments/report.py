"""Experiment reports: one folder with ``report.md``, ``report.json`` and PNGs.

Every report records how it was made: the exact command line, the config(s),
the code version (package version and, when run from a git checkout, the
commit and whether the tree had local changes) and a fingerprint of the data
(a SHA-256 over the manifest rows), so a number in a table can always be
traced back to what produced it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from faceage.data.manifest import Sample


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (``faceage experiment ...``), shell-quoted."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("faceage", "__main__.py", "faceage.exe"):
        argv[0] = "faceage"
    return " ".join(shlex.quote(a) for a in argv)


def code_version() -> dict:
    """Package version, and the git commit (+ dirty flag) when the package lives in a checkout."""
    from faceage import __version__

    info: dict = {"faceage": __version__, "python": sys.version.split()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # inference-only installs
        pass
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            # code and configs only: reports written into docs/ must not mark their own code "dirty"
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                    ":/src", ":/configs", ":/pyproject.toml"], cwd=here,
                                   capture_output=True, text=True, timeout=10)
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _row_name(s: Sample) -> str:
    # file names, not absolute paths: the same data set fingerprints the same on any machine
    return Path(s.path).name + (f"<{Path(s.source).name}" if s.source else "")


def data_fingerprint(samples: list[Sample]) -> dict:
    """SHA-256 over the sorted rows (file name[<source file name], age, subject, split), and the row count."""
    rows = sorted(f"{_row_name(s)},{s.age},{s.subject or ''},{s.split or ''}" for s in samples)
    h = hashlib.sha256("\n".join(rows).encode())
    return {"rows": len(rows), "sha256": h.hexdigest()}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def provenance(command: str | None, config, samples: list[Sample] | None = None, data: dict | None = None) -> dict:
    prov = {
        "command": command if command is not None else command_line(),
        "cwd": os.getcwd(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "code": code_version(),
        "config": config,
    }
    if data is not None:
        prov["data"] = data
    elif samples is not None:
        prov["data"] = data_fingerprint(samples)
    return prov


def md_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}" if np.isfinite(v) else "-"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out: str | Path, title: str, body: str, results: dict, prov: dict,
                 images: list[str] | None = None) -> dict:
    """Write ``out/report.json`` ({"title", "provenance", "results", "images"}) and ``out/report.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = [str(Path(p).relative_to(out)) if Path(p).is_absolute() else str(p) for p in images or []]
    doc = _jsonable({"title": title, "provenance": prov, "results": results, "images": images})
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    code = prov.get("code", {})
    version = code.get("faceage", "?") + (f", git {code['git_commit'][:12]}" if code.get("git_commit") else "")
    if code.get("git_dirty"):
        version += " (with local changes)"
    data = prov.get("data") or {}
    fp = "; ".join(f"{k}: {v['rows']} rows, sha256 {v['sha256'][:16]}" for k, v in data.items()
                   if isinstance(v, dict) and "sha256" in v)
    if "sha256" in data:
        fp = f"{data['rows']} rows, sha256 {data['sha256'][:16]}"
    md = [f"# {title}", "", body.strip(), ""]
    for img in images:
        md += [f"![{Path(img).stem}]({img})", ""]
    config = prov.get("config") or {}
    views = (config.get("eval") or {}).get("tta") if isinstance(config, dict) else None
    md += ["## Provenance", "", "```bash", prov.get("command", ""), "```", "",
           f"- code: faceage {version}",
           *([f"- test-time views (eval.tta): {views}"] if views else []), f"- data: {fp or 'n/a'}", f"- date: {prov.get('date', '')}",
           "- config: see `report.json` (`provenance.config`)", ""]
    (out / "report.md").write_text("\n".join(md))
    return doc
