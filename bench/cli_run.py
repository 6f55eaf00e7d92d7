"""Run a `curate` command in its own process and read its peak RSS (VmHWM, per process image, unlike the
ru_maxrss of children, which a forked parent's size inflates)."""

from __future__ import annotations

import subprocess
import sys
import time

WRAPPER = (
    "import atexit, sys\n"
    "atexit.register(lambda: print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
    " file=sys.stderr))\n"
    "from curate.cli import main\nsys.argv[0] = 'curate'\nmain()\n"
)


def run_curate(*args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `curate ARGS`; a failure stops the benchmark with curate's stderr."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return wall, int(proc.stderr.rsplit("VmHWM:", 1)[1].split()[0]) / 1024
