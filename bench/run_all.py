"""Run every benchmark script in bench/ in turn and print their figures (`make bench`), then draw the
charts of whatever results they wrote (bench/plots.py, also `make plots`).

Benchmarks print numbers; they assert nothing about speed. Each script starts what it needs (the local
cluster through the e2e harness, Prometheus, the operator) and stops it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {Path(__file__).name, "plots.py"}


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name in NOT_BENCHMARKS or script.name.startswith("_"):
            continue
        print(f"\n### {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.name)
    # The charts of every benchmark that wrote results, also after a failure of another one.
    print("\n### plots.py", flush=True)
    if subprocess.run([sys.executable, str(HERE / "plots.py")], check=False).returncode != 0:
        failed.append("plots.py")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
