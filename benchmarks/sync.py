"""Live sync speed through the real exec path on the harness:

- save-to-visible latency over 100 small edits, half each way (p50, p99; goal
  p50 < 100 ms, p99 < 300 ms). Pod and laptop share one kernel clock here, so a
  helper in the pod timestamps what it sees and what it writes.
- initial sync of 10,000 files / 100 MB into an empty pod folder (goal < 3 s);
- resync with nothing changed, from a new connection as after a broken link (goal < 0.25 s):
  the pod's agent stays behind after its connection, as pypod's does, and answers from
  what it kept (then stats every path, and says so: resync_noop_checked_s); beside it the
  same with a new agent and nothing kept, and that one's floor here: one exec into the
  pod plus one stat of every path in it;
- the anchor: `kubectl cp` of the same tree, in the same run (goal: pypod's first
  sync at least 1.5x as fast);
- the first sync of a new pod whose folder already holds the tree (as an image with
  the project baked in does; here kubectl cp put it there): nothing should be sent;
- the floor: the tree's bytes through the same exec stream into `cat`, no file made.

    python benchmarks/sync.py [--files 10000] [--megabytes 100] [--edits 100]

Starts the harness if it is not up (and stops it again afterwards). devspace,
julia_pod's tool, is not installed here, so kubectl cp is the anchor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import cluster as harness_cluster  # noqa: E402
from harness.layout import Layout  # noqa: E402
from pypod import agent  # noqa: E402
from pypod.settings import resolve  # noqa: E402
from pypod.sync.excludes import sync_excludes  # noqa: E402
from pypod.sync.link import AgentLink  # noqa: E402
from pypod.sync.syncer import Syncer  # noqa: E402

REMOTE = "/srv/bench"
KEEP_ALIVE_S = resolve({}, {}, {}).keep_alive  # how long pypod's pod agent stays

# Runs in the pod: "watch PATH TEXT" prints the time TEXT is first read at PATH;
# "write PATH TEXT" writes it (as an editor would) and prints the time it closed.
POD_HELPER = r"""
import os, sys, time
for line in sys.stdin:
    verb, path, text = line.rstrip("\n").split(" ", 2)
    if verb == "write":
        with open(path, "w") as handle:
            handle.write(text)
        print(time.time(), flush=True)
        continue
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with open(path) as handle:
                if handle.read() == text:
                    break
        except OSError:
            pass
        time.sleep(0.0005)
    print(time.time() if time.time() < deadline else -1, flush=True)
"""


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, info, namespace: str, pod: str) -> None:  # type: ignore[no-untyped-def]
        self.info = info
        self.exec_prefix = [
            info.kubectl,
            f"--kubeconfig={info.admin_kubeconfig}",
            "-n",
            namespace,
            "exec",
            "-i",
            pod,
            "--",
        ]
        self.pod = pod
        self.namespace = namespace

    def syncer(self, local: Path, remote: str, state: Path, linger: bool = True) -> tuple[Syncer, threading.Thread]:
        # As pypod runs it: the local stat cache kept per folder, shared by every pod, and
        # an agent that stays for the next connection (linger=False: one that does not).
        cache = local.parent / (local.name + ".cache.json")
        excludes = sync_excludes(local)
        if linger:
            argv, preamble = agent.sync_command("python3", remote, excludes, KEEP_ALIVE_S)
        else:
            argv, preamble = agent.stdin_command("python3", "sync")
        command = [*self.exec_prefix, *argv]
        syncer = Syncer(
            local,
            remote,
            lambda inbox: AgentLink(command, preamble, inbox),
            excludes,
            state_file=state,
            cache_file=cache,
            report=print,
        )
        thread = threading.Thread(target=syncer.run, daemon=True)
        return syncer, thread

    def timed_first_sync(
        self, local: Path, remote: str, state: Path, linger: bool = True
    ) -> tuple[float, Syncer, threading.Thread]:
        syncer, thread = self.syncer(local, remote, state, linger)
        started = time.perf_counter()
        thread.start()
        if not syncer.first_sync.wait(600):
            raise SystemExit(f"first sync did not finish: {syncer.health.line()}")
        return time.perf_counter() - started, syncer, thread

    def latency(self, edits: int) -> None:
        local = Path(tempfile.mkdtemp(prefix="pypod-sync-bench-"))
        (local / "pkg").mkdir()
        for i in range(50):
            (local / "pkg" / f"m{i}.py").write_text(f"x = {i}\n")
        state = local.parent / (local.name + ".state.json")
        _, syncer, thread = self.timed_first_sync(local, f"{REMOTE}/latency", state)
        helper = subprocess.Popen(
            [*self.exec_prefix, "python3", "-c", POD_HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert helper.stdin is not None and helper.stdout is not None
        up, down = [], []
        try:
            for i in range(edits):
                name = f"pkg/m{i % 50}.py"
                text = f"x = 'edit {i}'"
                if i % 2 == 0:  # laptop -> pod
                    helper.stdin.write(f"watch {REMOTE}/latency/{name} {text}\n")
                    helper.stdin.flush()
                    time.sleep(0.05)  # let the helper start looking
                    saved = time.time()
                    (local / name).write_text(text)
                    seen = float(helper.stdout.readline())
                    if seen > 0:
                        up.append((seen - saved) * 1000)
                else:  # pod -> laptop
                    helper.stdin.write(f"write {REMOTE}/latency/{name} {text}\n")
                    helper.stdin.flush()
                    deadline = time.time() + 10
                    while time.time() < deadline:
                        try:
                            if (local / name).read_text() == text:
                                break
                        except OSError:
                            pass
                        time.sleep(0.0005)
                    seen = time.time()
                    saved = float(helper.stdout.readline())
                    if seen < deadline:
                        down.append((seen - saved) * 1000)
                time.sleep(0.05)
        finally:
            helper.stdin.close()
            helper.wait(10)
            syncer.stop()
            thread.join(10)
        both = up + down
        bench("sync_edits_measured", len(both), "edits")
        bench("sync_p50_ms", statistics.median(both), "ms")
        bench("sync_p99_ms", percentile(both, 0.99), "ms")
        bench("sync_up_p50_ms", statistics.median(up), "ms")
        bench("sync_down_p50_ms", statistics.median(down), "ms")

    def bulk(self, files: int, megabytes: int) -> None:
        local = Path(tempfile.mkdtemp(prefix="pypod-sync-bulk-"))
        size = megabytes * 1024 * 1024 // files
        for i in range(files):
            directory = local / f"d{i // 100:03d}"
            if i % 100 == 0:
                directory.mkdir()
            (directory / f"f{i:05d}.dat").write_bytes(os.urandom(size))
        os.sync()  # a project at rest: not 100 MB of fresh writes still flushing to a slow disk
        state = local.parent / (local.name + ".state.json")
        remote = f"{REMOTE}/bulk-{uuid.uuid4().hex[:6]}"
        seconds, syncer, thread = self.timed_first_sync(local, remote, state)
        syncer.stop()
        thread.join(30)
        count = subprocess.run(
            [*self.exec_prefix, "sh", "-c", f"find {remote} -type f | wc -l"], capture_output=True, text=True
        ).stdout.strip()
        if count != str(files):
            raise SystemExit(f"initial sync left {count} files in the pod, expected {files}")
        bench("initial_sync_10k_s", seconds, "s")
        initial = seconds
        # A new connection, as after a broken link: nothing changed, so nothing is sent.
        # The first sync's agent stayed behind in the pod, and answers from what it kept.
        seconds, syncer, thread = self.timed_first_sync(local, remote, state)
        agreed = time.perf_counter()
        if not syncer.pod_checked.wait(60):
            raise SystemExit("the kept agent's check of every path never came")
        checked = seconds + time.perf_counter() - agreed
        syncer.stop()
        thread.join(30)
        if not syncer.health.watcher.endswith("(kept)"):
            raise SystemExit(f"the resync was not answered by the agent kept in the pod: {syncer.health.watcher}")
        bench("resync_noop_s", seconds, "s (both sides agree on the kept agent's index: pypod goes on)")
        bench("resync_noop_checked_s", checked, "s (and its stat of every path, just after, has come in)")
        # The same with no agent left in the pod (one that did not stay): it stats every path.
        fresh, syncer, thread = self.timed_first_sync(local, remote, state, linger=False)
        syncer.stop()
        thread.join(30)
        bench("resync_noop_new_agent_s", fresh, "s")
        floor = self.noop_floor(remote)
        bench("resync_noop_floor_s", floor, "s (one `kubectl exec POD -- true` plus one lstat of every pod path)")
        bench("resync_noop_new_agent_vs_floor", fresh / floor, "ratio")
        os.sync()
        started = time.perf_counter()
        subprocess.run(
            [*self.exec_prefix[:-4], "cp", str(local), f"{self.pod}:{REMOTE}/anchor"],
            check=True,
            capture_output=True,
        )
        anchor = time.perf_counter() - started
        bench("kubectl_cp_10k_s", anchor, "s")
        bench("initial_sync_vs_kubectl_cp", anchor / initial, "ratio")
        bench("stream_only_s", self.stream_only(local), "s (the tree's bytes through kubectl exec into cat: the floor)")
        # A new pod (new agreed state) whose folder already holds every file.
        self.pod_shell("sleep 0.01; touch /tmp/pypod-bench-marker; sleep 0.01")
        state = local.parent / (local.name + ".baked-state.json")
        seconds, syncer, thread = self.timed_first_sync(local, f"{REMOTE}/anchor", state)
        syncer.stop()
        thread.join(30)
        rewritten = self.pod_shell(f"find {REMOTE}/anchor -newer /tmp/pypod-bench-marker | wc -l")
        if rewritten != "0" or not syncer.agreed or len(syncer.agreed) != len(syncer.local):
            raise SystemExit(f"the baked first sync rewrote {rewritten} paths in the pod; it should send nothing")
        bench("initial_sync_baked_10k_s", seconds, "s")

    def noop_floor(self, remote: str) -> float:
        """What any resync that trusts nothing it did not look at costs here: an exec into
        the pod, and a stat of every path there (timed inside the pod, in Python as the
        agent is, with nothing else done per path)."""
        started = time.perf_counter()
        subprocess.run([*self.exec_prefix, "true"], check=True, capture_output=True)
        exec_s = time.perf_counter() - started
        walk = (
            "import os,sys,time\n"
            "def walk(d):\n"
            " with os.scandir(d) as it:\n"
            "  for e in it:\n"
            "   e.stat(follow_symlinks=False)\n"
            "   if e.is_dir(follow_symlinks=False): walk(e.path)\n"
            "t=time.perf_counter(); walk(sys.argv[1]); print(time.perf_counter()-t)\n"
        )
        return exec_s + float(self.pod_shell_argv(["python3", "-c", walk, remote]))

    def pod_shell_argv(self, argv: list[str]) -> str:
        done = subprocess.run([*self.exec_prefix, *argv], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def stream_only(self, local: Path) -> float:
        """The same bytes through the same exec stream, written nowhere: what any sync
        over kubectl exec costs before it creates a single file."""
        data = b"".join(path.read_bytes() for path in sorted(local.rglob("*.dat")))
        started = time.perf_counter()
        subprocess.run([*self.exec_prefix, "sh", "-c", "cat >/dev/null"], input=data, check=True)
        return time.perf_counter() - started

    def pod_shell(self, script: str) -> str:
        return self.pod_shell_argv(["sh", "-c", script])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--skip-latency", action="store_true", help="only the bulk figures")
    args = parser.parse_args()
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount

    layout = Layout.default()
    started_here = not harness_cluster.is_up(layout)
    info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr))
    client = Client(KubeConfig.from_file(info.admin_kubeconfig))
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        client.create(Namespace.from_dict({"metadata": {"name": namespace}}))
        while not any(sa.metadata.name == "default" for sa in client.list(ServiceAccount, namespace=namespace)):
            time.sleep(0.2)
        pod = "sync-bench"
        container = {"name": "driver", "image": info.base_image, "command": ["sleep", "3600"]}
        spec = {"terminationGracePeriodSeconds": 0, "containers": [container]}
        client.create(Pod.from_dict({"metadata": {"name": pod, "namespace": namespace}, "spec": spec}))
        while client.get(Pod, pod, namespace=namespace).status.phase != "Running":
            time.sleep(0.2)
        runner = Bench(info, namespace, pod)
        if not args.skip_latency:
            runner.latency(args.edits)
        runner.bulk(args.files, args.megabytes)
    finally:
        client.delete(Namespace, namespace)
        if started_here:
            harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
