"""Run every benchmark in this folder one after the other (``make bench``).

Each ``bench_*.py`` prints its own table (our time, the peer's time, the ratio; medians of several
runs). They run sequentially so they do not compete for the two cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.name for p in HERE.glob("bench_*.py"))
    failed = []
    for name in names:
        print(f"\n===== {name} =====", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / name)])
        if rc:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
