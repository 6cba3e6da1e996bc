"""Start-up cost: ``import symwrap`` and ``symwrap --help`` next to ``import torch``, each in a fresh interpreter.

Every round runs the three commands once each, in a rotated order (so a slow spell of a shared machine hits all of
them alike), each as a new subprocess of this interpreter; the table gives each command's median wall time over the
rounds and its ratio to ``import torch``. Targets: ``import symwrap`` ≤ 1.3×, ``symwrap --help`` ≤ 1.5×.

    python benchmarks/bench_import.py --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: The console script installed beside this interpreter (``python -m symwrap`` where there is none).
_SCRIPT = Path(sys.executable).with_name("symwrap")
COMMANDS: dict[str, list[str]] = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import symwrap": [sys.executable, "-c", "import symwrap"],
    "symwrap --help": [str(_SCRIPT), "--help"] if _SCRIPT.exists() else [sys.executable, "-m", "symwrap", "--help"],
}

TARGETS = {"import symwrap": 1.3, "symwrap --help": 1.5}


def time_once(command: list[str]) -> float:
    """Wall seconds of one run of ``command`` (its output discarded; a failure stops the benchmark)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="runs of each command (the median counts)")
    args = parser.parse_args()
    names = list(COMMANDS)
    for name in names:  # warm the file cache once, untimed
        time_once(COMMANDS[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            times[name].append(time_once(COMMANDS[name]))
    base = statistics.median(times["import torch"])
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'× import torch':>15} {'target':>7}")
    for name in names:
        median = statistics.median(times[name])
        target = f"≤ {TARGETS[name]}×" if name in TARGETS else ""
        print(f"{name:<16} {median:>9.3f} {min(times[name]):>7.3f} {median / base:>15.2f} {target:>7}")


if __name__ == "__main__":
    main()
