"""Shared bits of the benchmark scripts: where results go and how tables are written."""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "docs" / "benchmarks"


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def add_output_arguments(ap: argparse.ArgumentParser, tracked: Path = RESULTS) -> None:
    """``--write`` (results into the tracked folder ``tracked``) and ``--out DIR``; with neither, results go to a
    new temporary folder: a benchmark never changes tracked files unless asked."""
    ap.add_argument("--write", action="store_true",
                    help=f"write the results into {tracked.relative_to(REPO)} (tracked files; commit them)")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the results into this folder (default: a new temporary folder, unless --write)")


def output_folder(ap: argparse.ArgumentParser, args: argparse.Namespace, tracked: Path = RESULTS) -> Path:
    """The results folder :func:`add_output_arguments`' options ask for."""
    if args.write and args.out is not None:
        ap.error("give --write or --out, not both")
    return tracked if args.write else args.out or Path(tempfile.mkdtemp(prefix="faceage-bench-"))


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None = None, tracked: Path = RESULTS):
    """``ap.parse_args(argv)`` with ``args.out`` resolved (:func:`output_folder`)."""
    args = ap.parse_args(argv)
    args.out = output_folder(ap, args, tracked)
    return args


def write_results(name: str, data: dict, table: str, out: Path = RESULTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=float))
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {out / name}.json and .md")


def percentiles(seconds: list[float]) -> dict:
    a = np.asarray(seconds) * 1000
    return {"median_ms": round(float(np.median(a)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3)}


def at_once(run, jobs: list[tuple]) -> list:
    """``run(*job)`` for every job at the same time, one thread each (each job starts its own process, on its own
    core): a shared host's drift in speed then reaches every contender alike. Results in the jobs' order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: run(*job), jobs))
