"""SIGTERM, SIGHUP and SIGKILL at random moments of a run leave nothing behind.

Each trial starts the real `pypod` on a pseudo-terminal, waits for a phase (build, wait,
running job, REPL), sends a signal at a random moment inside it, and then checks the
cluster: no Job and no pod of that run once the REPL's keep-alive and the Job's TTL have
passed, and no kubectl or guard process of pypod's left on this machine.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from harness.cluster import ClusterInfo
from tests.pypodcli import PYPOD, Terminal

pytestmark = pytest.mark.cluster

KEEP_ALIVE_S = 3
CLEANUP_BOUND_S = 60
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)
# 50 trials; builds are the slow phase, so fewer of them.
PHASES = ["build"] * 8 + ["wait"] * 14 + ["running"] * 14 + ["repl"] * 14


@dataclass
class Outcome:
    phase: str  # the phase the signal landed in, as pypod's screen showed it
    signum: int
    exit_code: int | None
    cleanup_s: float
    screen: str


def _seen_phase(screen: str, planned: str) -> str:
    if planned == "repl" and ">>> " in screen:
        return "repl"
    if planned == "running" and "job-started" in screen:
        return "running"
    if " created in namespace " in screen:
        return "wait"
    return "build"


def _run_left(kube, namespace: str, run: str) -> list[str]:  # type: ignore[no-untyped-def]
    labels = {"pypod.dev/run": run}
    left = [f"job/{j.metadata.name}" for j in kube.list(Job, namespace=namespace, labels=labels)]
    return left + [f"pod/{p.metadata.name}" for p in kube.list(Pod, namespace=namespace, labels=labels)]


def _processes_mentioning(text: str, home: str = "") -> list[str]:
    """Processes whose command line has `text` (and, given `home`, whose HOME is that:
    other pypods may run on this machine beside the test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if home:
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"HOME={home}".encode() not in environ:
                continue
        if text in argv:
            found.append(f"{entry.name}: {argv[:200]}")
    return found


def _trial(index: int, planned: str, signum: int, env: dict[str, str], project: Path, kube, namespace: str) -> Outcome:  # type: ignore[no-untyped-def]
    rng = random.Random(index)
    run = f"sig{index}-{uuid.uuid4().hex[:4]}"
    trial_env = dict(env)
    args = ["--runid", run, "--keep-alive", str(KEEP_ALIVE_S), "--no-sync"]
    if planned == "build":
        trial_env.pop("PYPOD_IMAGE", None)
        # A dependency file of its own: the dependency image is built anew in this trial.
        (project / "requirements.txt").write_text(f"# trial {run}\n")
        args.append("import time; time.sleep(60)")
    elif planned == "running":
        args.append("import time; print('job-' + 'started', flush=True); time.sleep(60)")
    elif planned == "wait":
        args.append("import time; time.sleep(60)")
    term = Terminal(args, trial_env, cwd=project)
    try:
        if planned == "build":
            # A status line is drawn at the spinner's next tick, so a quick step's own
            # line may never reach the screen: any line of the build will do.
            term.expect("preparing the project's image", 120, "building the dependency image")
            delay = rng.uniform(0.0, 4.0)
        elif planned == "wait":
            term.expect(" created in namespace ", 120)
            delay = rng.uniform(0.0, 1.0)
        elif planned == "running":
            term.expect("job-started", 120)
            delay = rng.uniform(0.0, 2.0)
        else:
            term.expect(">>> ", 120)
            delay = rng.uniform(0.0, 2.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            term._pump(0.05)
        phase = _seen_phase(term.text(), planned)
        os.kill(term.pid, signum)
        exit_code = term.wait(60)
    except BaseException:
        with_kill(term)
        raise
    started = time.monotonic()
    deadline = started + CLEANUP_BOUND_S
    while _run_left(kube, namespace, run) or _processes_mentioning(run):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"trial {index} ({planned}, {signal.Signals(signum).name} in {phase}): left after "
                f"{CLEANUP_BOUND_S}s: {_run_left(kube, namespace, run) + _processes_mentioning(run)}\n"
                f"screen: {term.text()[-1500:]}"
            )
        time.sleep(0.5)
    return Outcome(phase, signum, exit_code, time.monotonic() - started, term.text())


def with_kill(term: Terminal) -> None:
    try:
        os.kill(term.pid, signal.SIGKILL)
        os.waitpid(term.pid, 0)
    except OSError:
        pass


def test_signals_at_random_moments_leave_no_job_pod_or_process(
    pypod_env, cluster: ClusterInfo, kube, namespace: str, tmp_path: Path, capsys
) -> None:
    env = dict(pypod_env, PYPOD_IMAGE=cluster.base_image, PYPOD_TTL_SECONDS="1")
    rng = random.Random(20261202)
    # Every signal in every phase; the order, and the moment within each phase, random.
    plan = [(i, phase, SIGNALS[PHASES[:i].count(phase) % len(SIGNALS)]) for i, phase in enumerate(PHASES)]
    rng.shuffle(plan)
    projects = []
    for i in range(len(plan)):
        project = tmp_path / f"p{i}"
        project.mkdir()
        (project / "pyproject.toml").write_text(f'[project]\nname = "sig{i}"\nversion = "0"\n')
        projects.append(project)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(_trial, i, phase, signum, env, projects[i], kube, namespace) for i, phase, signum in plan
        ]
        outcomes = [f.result() for f in futures]
    elapsed = time.monotonic() - started

    for outcome in outcomes:
        expected = -signal.SIGKILL if outcome.signum == signal.SIGKILL else 128 + outcome.signum
        assert outcome.exit_code == expected, (outcome.phase, outcome.signum, outcome.screen[-800:])
        if outcome.signum != signal.SIGKILL and outcome.phase == "repl":
            assert "the REPL lives on" in outcome.screen
    assert not _processes_mentioning("pypod.run.guard", env["HOME"]), "a guard outlived its pypod"

    tally = Counter((o.phase, signal.Signals(o.signum).name) for o in outcomes)
    by_phase = Counter(o.phase for o in outcomes)
    with capsys.disabled():
        print(f"\nsignal trials: {len(outcomes)} in {elapsed:.0f}s, all cleaned up; by phase {dict(by_phase)}")
        for (phase, name), count in sorted(tally.items()):
            print(f"  {phase:8} {name:8} {count}")
        print(f"  slowest cleanup {max(o.cleanup_s for o in outcomes):.1f}s")
    assert set(by_phase) == {"build", "wait", "running", "repl"}, by_phase


def test_sigterm_while_waiting_deletes_the_pending_job(pypod_env, cluster: ClusterInfo, kube, namespace, tmp_path):
    """The case that was reported: a Job left Pending by a killed pypod stays Pending."""
    env = dict(pypod_env, PYPOD_IMAGE=cluster.base_image)
    term = Terminal(["--runid", "pending", "--memory", "1Ei", "print(1)"], env, cwd=tmp_path)
    term.expect(" created in namespace ", 120)
    time.sleep(1)
    assert _run_left(kube, namespace, "pending")
    os.kill(term.pid, signal.SIGTERM)
    assert term.wait(30) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM; deleted pending" in term.text()
    deadline = time.monotonic() + 30
    while _run_left(kube, namespace, "pending"):
        assert time.monotonic() < deadline, _run_left(kube, namespace, "pending")
        time.sleep(0.3)


def test_sigkill_while_waiting_is_cleaned_up_by_the_guard(pypod_env, cluster: ClusterInfo, kube, namespace, tmp_path):
    env = dict(pypod_env, PYPOD_IMAGE=cluster.base_image)
    proc = subprocess.Popen(
        [*PYPOD, "--runid", "killed", "--memory", "1Ei", "print(1)"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not _run_left(kube, namespace, "killed"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while _run_left(kube, namespace, "killed"):
        assert time.monotonic() < deadline, _run_left(kube, namespace, "killed")
        time.sleep(0.3)
    assert b"deleted run killed" in proc.stderr.read()  # type: ignore[union-attr]
