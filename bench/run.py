"""`make bench`: run every benchmark in its own process and write JSON results to bench/results/."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCHES = {
    "embed": [
        ["bench.embed", "--model", "effnet-lite0", "--n", "1024"],
        ["bench.embed", "--model", "open_clip:ViT-B-32/random", "--n", "192", "--batch-size", "32"],
    ],
    "dedup": [
        ["bench.dedup", "--n", "1000000"],
        ["bench.copydetect", "--originals", "400"],
        ["bench.realscale", "--n", "50000"],
    ],
    "recaption": [
        ["bench.recaption", "--n", "1000000"],
    ],
    "dask": [
        ["bench.dask_overhead", "--images", "512", "--vectors", "200000"],
    ],
}


def main() -> None:
    only = set(sys.argv[1:])
    out_dir = Path("bench/results")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, runs in BENCHES.items():
        if only and name not in only:
            continue
        results = []
        for argv in runs:
            print(f"bench {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
        doc = {"bench": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.platform(),
               "cpus": __import__("os").cpu_count(), "results": results}
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2))
        print(f"wrote {out_dir / f'{name}.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
