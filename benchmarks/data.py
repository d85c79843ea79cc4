"""Download speed of `pypod data fetch`'s downloader against an anchor, and what a resume
fetches again, on the harness: one pod on the real node, writing onto a real PVC from the
harness's data server.

    python benchmarks/data.py [--size-mb 256] [--rounds 6]

- data_fetch_MBps: pypod's downloader (agent/fetch.py: sha256 while writing, fsync, rename).
- data_curl_MBps: the anchor, in the same pod, same PVC, same URL, interleaved with it.
  The harness's Python base image has no curl; the anchor is busybox's wget (the static
  busybox of the harness's helper image, copied in by an init container), which only
  writes the body to the file.
- data_fetch_vs_curl_ratio: the two (goal >= 0.9).
- data_resume_extra_bytes_pct: a downloader killed (SIGKILL) half-way and run again; the
  bytes the server sent beyond the file's size, less those it had sent that never reached
  the part before the kill, as a percentage of the size (goal < 5).

Needs the harness up; starts its data services if missing (`python -m harness start`).
Prints `BENCH <name> <value> <unit>` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from harness import cluster as harness_cluster  # noqa: E402
from harness import storage  # noqa: E402
from harness.cluster import ClusterInfo  # noqa: E402
from harness.layout import Layout  # noqa: E402
from pypod import agent  # noqa: E402

# Runs in the pod: alternates the two downloads, then the kill-and-resume.
IN_POD = r"""
import base64, json, os, resource, signal, subprocess, sys, time
os.makedirs("/tmp/pypod", exist_ok=True)
archive = "/tmp/pypod/agent.pyz"
open(archive, "wb").write(base64.b64decode(os.environ["PYPOD_AGENT"]))
url, size, rounds = os.environ["URL"], int(os.environ["SIZE"]), int(os.environ["ROUNDS"])

def fetch(query, dest, name="f.bin"):
    os.makedirs(dest, exist_ok=True)
    plan = {"dest": dest, "parallel": 1, "retries": 2, "files": [{"url": url + "?" + query, "name": name}]}
    open("/tmp/plan.json", "w").write(json.dumps(plan))
    return subprocess.Popen([sys.executable, archive, "data", "fetch", "/tmp/plan.json"], stdout=subprocess.DEVNULL)

def cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

def timed(argv_or_proc):
    began = time.monotonic()
    proc = argv_or_proc if isinstance(argv_or_proc, subprocess.Popen) else subprocess.Popen(argv_or_proc)
    assert proc.wait() == 0
    return time.monotonic() - began

def clean(path):
    subprocess.run(["rm", "-rf", path])
    os.sync()

def run_wget(n):
    os.makedirs("/pvc/wget", exist_ok=True)
    wget = ["/tools/busybox", "wget", "-q", "-O", "/pvc/wget/f.bin", url + f"?bench=wget{n}"]
    began, cpu_before = time.monotonic(), cpu()
    subprocess.run(wget, check=True)
    with open("/pvc/wget/f.bin", "rb+") as out:
        os.fsync(out.fileno())  # the same durability as the downloader's
    results["wget"].append(time.monotonic() - began)
    results["wget_cpu"].append(cpu() - cpu_before)
    clean("/pvc/wget")

def run_fetch(n):
    cpu_before = cpu()
    results["fetch"].append(timed(fetch(f"bench=fetch{n}", "/pvc/fetch")))
    results["fetch_cpu"].append(cpu() - cpu_before)
    clean("/pvc/fetch")

results = {"fetch": [], "wget": [], "fetch_cpu": [], "wget_cpu": []}
subprocess.run(["/tools/busybox", "wget", "-q", "-O", "/dev/null", url + "?warm=1"], check=True)
# The harness's volume is a sparse image: its first write of a block costs more than the
# next ones, and each side's files land in other block groups. Fill it whole once (dd ends
# at ENOSPC), so neither side pays that for the other.
subprocess.run(["/tools/busybox", "dd", "if=/dev/zero", "of=/pvc/fill", "bs=1048576"], stderr=subprocess.DEVNULL)
clean("/pvc/fill")
for n in range(rounds + 1):
    first, second = (run_fetch, run_wget) if n % 2 == 0 else (run_wget, run_fetch)
    first(n)
    second(n)
# The first round warms the volume and the page cache: not counted.
for key in ("fetch", "wget", "fetch_cpu", "wget_cpu"):
    results[key] = results[key][1:]

# Kill half-way (the server is slowed so that "half" can be seen), then resume.
rate = 50 * 2**20
first = fetch(f"bench=resume&rate={rate}", "/pvc/resume", "r.bin")
part = "/pvc/resume/.pypod-fetch/r.bin.part"
while not os.path.exists(part) or os.path.getsize(part) < size // 2:
    time.sleep(0.02)
first.send_signal(signal.SIGKILL)
first.wait()
results["part_at_kill"] = os.path.getsize(part)
results["resume_s"] = timed(fetch(f"bench=resume&rate={rate}", "/pvc/resume", "r.bin"))
results["resumed_size"] = os.path.getsize("/pvc/resume/r.bin")
print("RESULT " + json.dumps(results), flush=True)
"""


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def retry(call, tries: int = 30):  # type: ignore[no-untyped-def]
    """`call()`, again while the apiserver is away (other tests restart the shared one)."""
    import httpx2

    for attempt in range(tries):
        try:
            return call()
        except httpx2.TransportError:
            if attempt == tries - 1:
                raise
            time.sleep(2)
    return None


def make_file(root: Path, size: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}.bin"
    path = root / name
    root.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(8 << 20, left))
            out.write(chunk)
            left -= len(chunk)
    return name


def pod(info: ClusterInfo, namespace: str, url: str, size: int, rounds: int) -> dict:
    env = [
        {"name": "PYPOD_AGENT", "value": agent.agent_payload()},
        {"name": "URL", "value": url},
        {"name": "SIZE", "value": str(size)},
        {"name": "ROUNDS", "value": str(rounds)},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench-data", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {
                    "name": "tools",
                    "image": storage.HELPER_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["cp", "/bin/busybox", "/tools/busybox"],
                    "volumeMounts": [{"name": "tools", "mountPath": "/tools"}],
                }
            ],
            "containers": [
                {
                    "name": "bench",
                    "image": info.base_image,
                    "command": ["python3", "-c", IN_POD],
                    "env": env,
                    "volumeMounts": [{"name": "data", "mountPath": "/pvc"}, {"name": "tools", "mountPath": "/tools"}],
                }
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "bench"}},
                {"name": "tools", "emptyDir": {}},
            ],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    size = args.size_mb << 20
    layout = Layout.default()
    if not harness_cluster.is_up(layout):
        raise SystemExit("the harness is not up: `python -m harness up`")
    info = ClusterInfo.load(layout.env_file)
    services = (storage.PROVISIONER_SERVICE, storage.DATA_SERVER_SERVICE)
    harness_cluster.start_services(layout, lambda m: print(m, file=sys.stderr), services)
    data = harness_cluster.storage_info(layout)

    import httpx2
    from lightkube import Client, KubeConfig, codecs
    from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount

    client = Client(KubeConfig.from_file(info.admin_kubeconfig), field_manager="pypod-bench")
    namespace = f"bench-data-{uuid.uuid4().hex[:6]}"
    client.create(Namespace.from_dict({"metadata": {"name": namespace}}))
    name = make_file(Path(data.data_root), size)
    os.sync()  # the file's own writeback must not overlap the measurements
    try:
        deadline = time.monotonic() + 30
        while not any(sa.metadata.name == "default" for sa in client.list(ServiceAccount, namespace=namespace)):
            if time.monotonic() > deadline:
                raise SystemExit("no default ServiceAccount")
            time.sleep(0.2)
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "bench", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": f"{(5 * size // 2) >> 20}Mi"}},
            },
        }
        retry(lambda: client.create(codecs.from_dict(claim)))
        manifest = pod(info, namespace, f"{data.data_server}/files/{name}", size, args.rounds)
        retry(lambda: client.create(codecs.from_dict(manifest)))
        deadline = time.monotonic() + 900
        while True:
            try:
                phase = client.get(Pod, "bench-data", namespace=namespace).status.phase
            except httpx2.TransportError:  # the shared harness's apiserver restarted by another test
                phase = None
            if phase in ("Succeeded", "Failed"):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark pod did not finish in 15 minutes")
            time.sleep(1)
        log = "".join(retry(lambda: list(client.log("bench-data", namespace=namespace, container="bench"))))
        if phase != "Succeeded":
            raise SystemExit(f"the benchmark pod failed:\n{log[-2000:]}")
        result = json.loads(log.split("RESULT ", 1)[1])
        # The volume's disk is shared with whatever else the machine does: each round's two
        # runs are next to each other in time, so the ratio is taken per round, then the median.
        fetch_s, wget_s = statistics.median(result["fetch"]), statistics.median(result["wget"])
        ratios = [w / f for f, w in zip(result["fetch"], result["wget"], strict=True)]
        rounds = ", ".join(f"{f:.2f}/{w:.2f}" for f, w in zip(result["fetch"], result["wget"], strict=True))
        print(f"# seconds per round, pypod/anchor: {rounds}", file=sys.stderr)
        bench("data_fetch_MBps", size / fetch_s / 1e6, "MB/s")
        bench("data_curl_MBps", size / wget_s / 1e6, "MB/s")
        bench("data_fetch_vs_curl_ratio", statistics.median(ratios), "ratio")
        # CPU seconds per download (user + system of the client process): on a busy 2-core
        # machine the wall-clock ratio follows the CPU each needs.
        bench("data_fetch_cpu_s", statistics.median(result["fetch_cpu"]), "s")
        bench("data_curl_cpu_s", statistics.median(result["wget_cpu"]), "s")
        requests = [json.loads(line) for line in Path(data.data_log).read_text().splitlines()]
        resume = [r for r in requests if r["path"] == f"/files/{name}" and "bench=resume" in r["query"]]
        sent_first = resume[0]["sent"]
        lost_at_kill = sent_first - result["part_at_kill"]
        served = sum(r["sent"] for r in resume)
        assert result["resumed_size"] == size
        extra = served - size - lost_at_kill
        bench("data_resume_extra_bytes_pct", 100 * extra / size, "%")
        bench("data_resume_lost_at_kill_MB", lost_at_kill / 1e6, "MB")
    finally:
        retry(lambda: client.delete(Namespace, namespace))
        (Path(data.data_root) / name).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
