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
        ["bench.copydetect", "--originals", "400"],
        ["bench.copy_light"],
        ["bench.realscale", "--n", "50000"],
    ],
    "recaption": [
        ["bench.recaption", "--n", "1000000"],
    ],
    "dask": [
        ["bench.dask_overhead", "--images", "512", "--vectors", "200000"],
    ],
}

# one tiny run per benchmark module (each also takes --data where it caches inputs; the test points it at a
# temporary folder)
SMOKE = {
    "bench.embed": ["--n", "24", "--batch-size", "8"],
    "bench.dedup": ["--n", "20000", "--dim", "32", "--queries", "50", "--baseline-queries", "200"],
    "bench.copydetect": ["--originals", "8"],
    "bench.copy_light": ["--dev-originals", "6", "--heldout-groups", "4", "--copies", "2"],
    "bench.realscale": ["--n", "600"],
    "bench.recaption": ["--n", "3000", "--repeat", "1"],
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


def main() -> None:
    only = set(sys.argv[1:])
    unknown = only - set(BENCHES)
    if unknown:
        raise SystemExit(f"bench: unknown benchmark(s) {', '.join(sorted(unknown))}; one of {', '.join(BENCHES)}")
    out_dir = Path("bench/results")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, runs in BENCHES.items():
        if only and name not in only:
            continue
        results = []
        for argv in runs:
            print(f"bench {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
            results.append(run_one(argv))
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
        doc = {"bench": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.platform(),
               "cpus": os.cpu_count(), "results": results}
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2))
        print(f"wrote {out_dir / f'{name}.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
