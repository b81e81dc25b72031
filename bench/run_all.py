"""Run every benchmark in bench/ and pass their JSON lines through.

Each benchmark prints one JSON object per figure on stdout
(``{"bench": ..., "metric": ..., "value": ..., "unit": ...}``). This runner executes them one
after the other (they share the machine's two cores) and exits non-zero if any failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ("capture_bench.py", "sink_bench.py", "e2e_bench.py", "backfill_bench.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHES:
        path = here / name
        if not path.exists():
            print(f"# {name}: missing", file=sys.stderr)
            failed.append(name)
            continue
        print(f"# running {name}", file=sys.stderr, flush=True)
        rc = subprocess.call([sys.executable, str(path), *sys.argv[1:]])
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
