"""Size of an inference-only install: build the wheel, install it without extras into a fresh
venv, and report the venv's size on disk with its largest packages (issue 24's goal: <= 250 MB).

    python -m benchmarks.install_size                 # this working tree
    python -m benchmarks.install_size --ref main      # a git commit or branch (git archive), e.g. before a change
    python -m benchmarks.install_size --write         # also write docs/benchmarks/install_size.{json,md}

pip downloads the dependencies from the package index (its cache makes reruns quick). The
venv holds pip itself too; its size is shown on its own line.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks._common import REPO, RESULTS, markdown_table, machine, write_results

MiB = 2**20  # as du -h counts (the issue measured 427 this way)


def disk_bytes(path: Path) -> int:
    """Bytes on disk under ``path`` (allocated blocks, as ``du`` counts them; links not followed)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            total += st.st_blocks * 512
    return total


def source_tree(ref: str | None, tmp: Path) -> Path:
    """The tree to build: this checkout, or ``ref`` exported with git archive (untracked files left out)."""
    if ref is None:
        return REPO
    out = tmp / "src"
    out.mkdir()
    archive = tmp / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out


def build_wheel(tree: Path, outdir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(tree)], check=True,
                   stdout=subprocess.DEVNULL)
    (wheel,) = outdir.glob("faceage-*.whl")
    return wheel


def measure(wheel: Path, venv: Path) -> dict:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv sees the wheel and its deps only
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], check=True,
                   env=env)
    seconds = time.perf_counter() - t0
    site = next((venv / "lib").glob("python3*/site-packages"))
    packages: dict[str, int] = {}
    for entry in site.iterdir():
        if entry.name.endswith((".dist-info", ".pth")) or entry.name == "__pycache__":
            continue
        key = entry.name.removesuffix(".py").split(".")[0]
        packages[key] = packages.get(key, 0) + (disk_bytes(entry) if entry.is_dir() else entry.lstat().st_blocks * 512)
    version = subprocess.run([str(py), "-c", "import faceage; print('faceage', faceage.__version__)"], check=True,
                             capture_output=True, text=True, env=env).stdout.strip()
    return {"venv_bytes": disk_bytes(venv), "wheel_bytes": wheel.stat().st_size, "install_s": round(seconds, 1),
            "faceage_version": version, "packages": dict(sorted(packages.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=None, help="build this git commit or branch instead of the working tree")
    ap.add_argument("--top", type=int, default=12, help="largest packages listed (default 12)")
    ap.add_argument("--write", action="store_true", help=f"write install_size.json and .md to {RESULTS}")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="faceage-size-") as tmp:
        tmp = Path(tmp)
        wheel = build_wheel(source_tree(args.ref, tmp), tmp / "dist")
        res = measure(wheel, tmp / "venv")
    res.update({"ref": args.ref or "working tree", "machine": machine(), "python": sys.version.split()[0],
                "command": "python -m benchmarks.install_size" + (f" --ref {args.ref}" if args.ref else "")})
    rows = [[name, f"{size / MiB:.1f}"] for name, size in list(res["packages"].items())[: args.top]]
    rows += [["**venv total**", f"**{res['venv_bytes'] / MiB:.1f}**"], ["wheel file", f"{res['wheel_bytes'] / MiB:.2f}"]]
    table = (f"`{res['command']}` ({res['faceage_version']}, Python {res['python']}, "
             f"`pip install faceage-*.whl` without extras, {res['install_s']} s)\n\n"
             + markdown_table(["package (site-packages)", "MiB on disk"], rows))
    if args.write:
        write_results("install_size", res, table)
    else:
        print(table)


if __name__ == "__main__":
    main()
