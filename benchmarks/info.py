"""`pypod info` speed: the in-process read-out (`pypod.info()`), without and with its CPU-usage
sample, and the command; beside it the seed's psutil read-out (pods-python-environments.md's
`tell_system_status()`), which reports the node's figures, as the anchor where psutil is
installed. No cluster needed.

    python benchmarks/info.py [--runs 30]

Goal: info_s < 0.1 s. Prints `BENCH <name> <value> <unit>` lines (medians).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pypod.agent.resources import CPU_SAMPLE_S, collect  # noqa: E402


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.4f} {unit}", flush=True)


def median_time(call: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def tell_system_status() -> str:
    """The seed's read-out, as printed there (psutil answers for the node, not the pod)."""
    import datetime
    import platform

    import psutil

    os_name, name, version, _, _, _ = platform.uname()
    version = version.split("-")[0]
    cores = psutil.cpu_count()
    cpu_percent = psutil.cpu_percent()
    ram = psutil.virtual_memory().total >> 30
    memory_percent = psutil.virtual_memory()[2]
    disk_percent = psutil.disk_usage("/")[3]
    boot_time = datetime.datetime.fromtimestamp(psutil.boot_time())
    running_since = boot_time.strftime("%A %d. %B %Y")
    response = f"I am currently running on {os_name} version {version}.  \n"
    response += f"This system is named {name} \n"
    response += f"It has {cores} CPU cores.  \n"
    response += f"It has {ram} Gigabytes of RAM.  \n"
    response += f"Current disk_percent is {disk_percent} percent.  \n"
    response += f"Current CPU utilization is {cpu_percent} percent.  \n"
    response += f"Current memory utilization is {memory_percent} percent. \n"
    response += f"it has been running since {running_since}. \n"
    return response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    collect(sample_s=0)  # warm the imports, as a second call in a session would be

    bench("info_s", median_time(lambda: collect(sample_s=CPU_SAMPLE_S), args.runs), "s")
    bench("info_nosample_s", median_time(lambda: collect(sample_s=0), args.runs), "s")
    command = [sys.executable, "-m", "pypod", "info", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cli = median_time(lambda: subprocess.run(command, env=env, capture_output=True, check=True), max(3, args.runs // 6))
    bench("info_cli_s", cli, "s")
    try:
        import psutil  # noqa: F401
    except ImportError:
        print("# anchor: psutil is not installed here; pip install psutil to time the seed's read-out", flush=True)
        return 0
    bench("anchor_psutil_readout_s", median_time(tell_system_status, args.runs), "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
