"""A killed run leaves no one writing: `curate download --workers 2` SIGKILLed mid-run takes its worker processes
with it, nothing is committed into the output after, a second process cannot write the same output at once,
and no temp folder is left in $TMPDIR."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.test_download import CURATE, _many_shards, run_download


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every live (not zombie) process below `pid`."""
    parent_of, cmd = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z":
                continue
            parent_of[int(d.name)] = int(fields[1])
            cmd[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, parent in parent_of.items():
            if parent == p and child not in out:
                out[child] = cmd[child]
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} if out.exists() else {}


def test_sigkilled_download_takes_its_workers_along_and_nobody_writes_after(server, photos, tmp_path):
    inputs = _many_shards(server, photos, tmp_path / "in", n_shards=6)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    args = ("--allow-private-network", "--threads", "2", "--timeout", "5", "--workers", "2")
    out = tmp_path / "out"
    server.httpd.delay = 0.4  # slow every response: the kill lands while both workers are mid-shard
    proc = subprocess.Popen([*CURATE, "download", str(inputs), str(out), "--no-progress", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    workers: dict[int, str] = {}
    def busy() -> bool:  # a shard is being worked on: its temp folder exists
        return (out / "_tmp").exists() and any((out / "_tmp").iterdir())

    while len(workers) < 2 or not busy():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        workers = {p: c for p, c in descendants(proc.pid).items() if "spawn_main" in c}
        time.sleep(0.05)

    # a second process on the same output is refused while the first holds it
    second = run_download(inputs, out, *args, check=False)
    assert second.returncode == 2 and "another curate process is writing here" in second.stderr

    proc.kill()
    proc.wait()
    killed_at = files(out)
    gone_by = time.time() + 5
    while any(alive(p) for p in workers) and time.time() < gone_by:
        time.sleep(0.05)
    assert not [p for p in workers if alive(p)], "worker processes outlived the killed run"
    time.sleep(2.0)  # long enough for an orphan to have finished a slowed shard
    assert files(out) == killed_at, "something was committed into the output after the run died"
    assert sorted(p.name for p in tmp.iterdir()) == []  # no wandb or other temp folders left behind
    server.httpd.delay = 0.0

    result = run_download(inputs, out, *args)  # the rerun is not refused: the dead run's lock died with it
    assert "36/42 rows ok" in result.stdout, result.stdout
