"""`make bench`: run every benchmark in its own process and write JSON results to bench/results/.

`SMOKE` holds a tiny run of every benchmark module; `make test` runs them (tests/test_bench_smoke.py), so a
benchmark that no longer runs fails the tests instead of the next `make bench`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCHES = {
    "embed": [
        ["bench.embed", "--model", "effnet-lite0", "--n", "1024"],
        ["bench.embed", "--model", "open_clip:ViT-B-32/random", "--n", "192", "--batch-size", "32"],
        ["bench.embed", "--model", "sscd-distilled", "--n", "1024", "--batch-size", "32"],
        ["bench.embed", "--model", "sscd", "--n", "512", "--batch-size", "32"],
    ],
    "dedup": [
        ["bench.dedup", "--n", "1000000"],
        ["bench.realscale", "--n", "50000"],
    ],
    "copydetect": [
        ["bench.copydetect", "--timing", "10000"],
    ],
    "recaption": [
        ["bench.recaption", "--n", "1000000"],
        ["bench.caption_models", "--images", "256", "--captions", "512", "--full-size", "16"],
    ],
    "dask": [
        ["bench.dask_overhead", "--images", "512", "--vectors", "200000"],
    ],
    # issue #18, about 2 hours on 2 cores and 60 GB of disk: the research's 12M rows on one node, and the Dask
    # driver's peak RSS as N grows (docs/benchmarks.md#dedup)
    "scale": [
        ["bench.dedup", "--n", "12000000", "--dim", "512"],
        ["bench.dedup", "--n", "12000000", "--dim", "1280"],
        *(["bench.dedup", "--n", str(n), "--engine", "dask", "--workers", "2", "--baseline-queries", "0"]
          for n in (2_000_000, 4_000_000, 8_000_000)),
    ],
}

ON_REQUEST = {"scale"}  # run only when named: `make bench BENCH=scale`

# one tiny run per benchmark module (each also takes --data where it caches inputs; the test points it at a
# temporary folder)
SMOKE = {
    "bench.embed": ["--n", "24", "--batch-size", "8"],
    "bench.dedup": ["--n", "20000", "--dim", "32", "--queries", "50", "--baseline-queries", "200",
                    "--shard-rows", "5000"],
    "bench.copydetect": ["--per-source", "3", "--heldout", "4", "--copies", "1", "--backends", "effnet-lite0,phash",
                         "--dev-sources", "bundled,tuxpaint", "--heavy-groups", "1", "--heavy-copies", "10",
                         "--timing", "60", "--timing-per-source", "3"],
    "bench.realscale": ["--n", "600"],
    "bench.recaption": ["--n", "3000", "--repeat", "1"],
    "bench.caption_models": ["--images", "8", "--captions", "16"],
    "bench.dask_overhead": ["--images", "16", "--shards", "2", "--vectors", "4000", "--dim", "32"],
    "bench.closed_loop": ["--steps", "2", "--dup-images", "2", "--copies", "3", "--audit-seeds", "1"],
}
TAKES_DATA = ("bench.embed", "bench.dedup", "bench.realscale", "bench.recaption", "bench.dask_overhead")


def run_one(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> dict:
    """Run one benchmark; its JSON result, or SystemExit with the benchmark's own error (its stderr's end)."""
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env, cwd=cwd)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise SystemExit(f"bench: {' '.join(argv)} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def provenance() -> dict:
    """What an evidence file says about where its figures come from: the commit (with -dirty for uncommitted
    changes) and the machine."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no")
                                                   else "")
    mem_kib = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {"commit": commit, "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, "
                                         f"{mem_kib / 2**20:.0f} GiB, no GPU" if mem_kib else platform.platform(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main() -> None:
    """`python -m bench.run [--evidence] [NAME ...]`: results to bench/results/ (with --evidence also to
    bench/evidence/bench_NAME.json, the files the docs quote)."""
    args = sys.argv[1:]
    evidence = "--evidence" in args
    only = {a for a in args if a != "--evidence"}
    unknown = only - set(BENCHES)
    if unknown:
        raise SystemExit(f"bench: unknown benchmark(s) {', '.join(sorted(unknown))}; one of {', '.join(BENCHES)}")
    out_dir = Path("bench/results")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, runs in BENCHES.items():
        if (only and name not in only) or (not only and name in ON_REQUEST):
            continue
        results = []
        for argv in runs:
            print(f"bench {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
            results.append(run_one(argv))
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
        doc = {"what": f"make bench BENCH={name}", **provenance(),
               "runs": [{"argv": argv, "result": r} for argv, r in zip(runs, results, strict=True)]}
        targets = [out_dir / f"{name}.json"] + ([Path("bench/evidence") / f"bench_{name}.json"] if evidence else [])
        for target in targets:
            target.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
