"""The driver flow end to end, through the real `pypod` command, the harness's
apiserver and the real node: what a user types, what a user sees.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from harness.cluster import ClusterInfo
from tests.kubehelp import wait_for, wait_pod
from tests.pypodcli import Terminal, run_cli

pytestmark = pytest.mark.cluster


@pytest.fixture
def env(pypod_env: dict[str, str], cluster: ClusterInfo) -> dict[str, str]:
    return dict(pypod_env, PYPOD_IMAGE=cluster.base_image)  # a given image: nothing is built


def jobs_left(kube, namespace: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        j.metadata.name for j in kube.list(Job, namespace=namespace, labels={"app.kubernetes.io/managed-by": "pypod"})
    ]


def no_jobs_left(kube, namespace: str) -> None:  # type: ignore[no-untyped-def]
    wait_for(lambda: not jobs_left(kube, namespace), 30)


def test_code_runs_as_a_job_and_its_exit_code_is_pypods(env, kube, namespace, tmp_path):
    result = run_cli(["import sys; print('from the pod'); sys.exit(3)"], env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "from the pod" in result.stdout
    no_jobs_left(kube, namespace)


def test_run_script_passes_arguments(env, kube, namespace, tmp_path):
    # timeit.py is in the base image: its own output proves the arguments arrived.
    result = run_cli(["run", "/usr/lib/python3.11/timeit.py", "-n", "3", "-r", "1", "pass"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 loops" in result.stdout
    no_jobs_left(kube, namespace)


def test_repl_in_a_terminal_with_ctrl_c_and_exit_code(env, kube, namespace, tmp_path):
    term = Terminal([], env, cwd=tmp_path)
    term.expect(">>> ", 90)
    term.line("x = 6 * 7")
    term.line("print(x)")
    term.expect("42\r\n")
    term.line("import time; time.sleep(60)")
    time.sleep(1.0)
    term.send("\x03")  # Ctrl-C: the remote interpreter is interrupted; pypod keeps going
    term.expect("KeyboardInterrupt")
    term.line("print('still', x)")
    term.expect("still 42")
    term.line("exit(4)")
    assert term.wait() == 4
    no_jobs_left(kube, namespace)


def test_attach_reconnects_to_the_same_interpreter_after_the_client_dies(env, kube, namespace, tmp_path):
    term = Terminal(["--runid", "keepme"], env, cwd=tmp_path)
    term.expect(">>> ", 90)
    term.line("secret = 1234")
    term.expect(">>> ")
    term.kill()
    again = Terminal(["attach", "keepme"], env, cwd=tmp_path)
    again.expect(">>> secret = 1234", 60)  # the screen as it was is shown again
    again.line("print(secret + 1)")
    again.expect("1235", 60)
    again.line("exit()")
    assert again.wait() == 0
    no_jobs_left(kube, namespace)


def test_abandoned_repl_ends_after_keep_alive(env, kube, namespace, tmp_path):
    term = Terminal(["--runid", "abandoned", "--keep-alive", "3"], env, cwd=tmp_path)
    term.expect(">>> ", 90)
    term.kill()
    pod = wait_for(
        lambda: next(iter(kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": "abandoned"})), None), 10
    )

    def ended(p: Pod) -> bool:
        return p.status is not None and p.status.phase in ("Succeeded", "Failed")

    wait_pod(kube, namespace, pod.metadata.name, ended, 90)
    logs = "".join(kube.log(pod.metadata.name, namespace=namespace))
    assert "no client attached for 3s" in logs


def test_detached_repl_outlives_its_client(env, kube, namespace, tmp_path):
    term = Terminal(["--runid", "detached", "--keep-alive", "2", "--detach"], env, cwd=tmp_path)
    term.expect(">>> ", 90)
    term.kill()
    time.sleep(8)
    pods = list(kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": "detached"}))
    assert pods and pods[0].status.phase == "Running"
    listed = run_cli(["ps"], env)
    assert "detached" in listed.stdout and "running" in listed.stdout
    removed = run_cli(["rm", "detached"], env)
    assert removed.returncode == 0, removed.stderr
    no_jobs_left(kube, namespace)


def test_pending_timeout_shows_the_schedulers_message_and_cleans_up(env, kube, namespace, tmp_path):
    result = run_cli(["--memory", "1Ei", "--pending-timeout", "6", "print(1)"], env, cwd=tmp_path)
    assert result.returncode == 73, result.stderr
    assert "Insufficient memory" in result.stderr
    assert "nodes are available" in result.stderr
    assert "Traceback" not in result.stderr
    no_jobs_left(kube, namespace)


def test_an_image_that_cannot_be_pulled_fails_fast(env, cluster, kube, namespace, tmp_path):
    started = time.monotonic()
    result = run_cli(["--image", f"{cluster.registry}/no/such:image", "print(1)"], env, cwd=tmp_path)
    assert result.returncode == 72, result.stderr
    assert "ErrImagePull" in result.stderr or "ImagePullBackOff" in result.stderr
    assert time.monotonic() - started < 60
    no_jobs_left(kube, namespace)


def test_a_suspended_job_shows_its_admission_state(env, kube, namespace, tmp_path):
    # Suspended by its template, with no queue label: nobody will admit it, and pypod says so.
    template = tmp_path / "driver.yaml.template"
    template.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: $RUNID\nspec:\n  suspend: true\n  template:\n"
        "    spec:\n      containers:\n      - name: driver\n        image: $IMAGE_TAG\n        command: [$COMMAND]\n"
    )
    result = run_cli(["--template", str(template), "--pending-timeout", "4", "print(1)"], env, cwd=tmp_path)
    assert result.returncode == 73, result.stderr
    assert "waiting for admission: the Job is suspended" in result.stderr
    no_jobs_left(kube, namespace)


def test_restricted_user_gets_a_clear_403_and_its_minimal_role_suffices(env, cluster, tmp_path):
    env = dict(env, KUBECONFIG=cluster.restricted_kubeconfig, KUBERNETES_NAMESPACE="default")
    refused = run_cli(["print(1)"], env, cwd=tmp_path)
    assert refused.returncode == 69, refused.stderr
    assert "not allowed to create jobs in namespace 'default'" in refused.stderr
    assert "pypod rbac" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # In its own namespace, the Role `pypod rbac` prints is enough for a whole run.
    env["KUBERNETES_NAMESPACE"] = cluster.restricted_namespace
    allowed = run_cli(["print('ok as restricted')"], env, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert "ok as restricted" in allowed.stdout


def test_a_hundred_character_branch_gives_a_valid_run(env, kube, namespace, tmp_path):
    project = tmp_path / "Weird_Repo.Name"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'weird'\n")
    branch = "feature/" + "Very-Long_branch.x" * 6
    assert len(branch) >= 100
    for cmd in (
        ["init", "-q", "-b", branch],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *cmd], cwd=project, check=True)
    result = run_cli(["print('branch ok')"], env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert "branch ok" in result.stdout
    created = next(line for line in result.stderr.splitlines() if line.startswith("run "))
    name = created.split()[1]
    assert name.startswith("weird-repo-name-feature-very-")
    assert len(name) <= 57


def test_julia_pod_template_with_quotes_and_newlines_in_code(env, tmp_path):
    template = tmp_path / "driver.yaml.template"
    template.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: driver-$RUNID\nspec:\n  template:\n    spec:\n"
        "      serviceAccountName: $KUBERNETES_SERVICEACCOUNT\n      containers:\n      - name: driver\n"
        "        image: $IMAGE_TAG\n        command: [$COMMAND]\n        env:\n        - name: WHERE\n"
        "          value: $GIT_REPO@$GIT_BRANCH\n"
    )
    code = 'print("it\'s \\"quoted\\": yes")\nprint(\'second line\')'
    result = run_cli(["--template", str(template), code], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'it\'s "quoted": yes\nsecond line' in result.stdout


def test_port_forward_lasts_the_session(env, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    term = Terminal(["--port-forward", f"{local}:8000"], env, cwd=tmp_path)
    term.expect(f"http://127.0.0.1:{local}", 90)
    term.expect(">>> ", 90)
    term.line(
        "import functools, http.server, socketserver, threading; "
        "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/etc'); "
        "srv = socketserver.ThreadingTCPServer(('0.0.0.0', 8000), h); "
        "threading.Thread(target=srv.serve_forever, daemon=True).start()"
    )
    term.expect(">>> ")

    def fetch() -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/os-release", timeout=2) as r:
                return r.read()
        except OSError:
            return None

    assert b"Debian" in wait_for(fetch, 30, interval=0.5)
    term.line("exit()")
    assert term.wait() == 0


def test_history_is_seeded_into_the_pod_and_merged_back(env, tmp_path):
    history = Path(env["HOME"]) / ".python_history"
    history.write_text("seeded_from_laptop = 1\n")
    term = Terminal([], env, cwd=tmp_path)
    term.expect(">>> ", 90)
    term.line("import readline; print('HIST', readline.get_history_item(1))")
    term.expect("HIST seeded_from_laptop = 1")
    term.line("made_in_the_pod = 2")
    term.line("exit()")
    assert term.wait() == 0
    lines = history.read_text().splitlines()
    assert lines[0] == "seeded_from_laptop = 1"
    assert "made_in_the_pod = 2" in lines


def test_logs_follow_a_detached_job(env, kube, namespace, tmp_path):
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True); time.sleep(1)"
    started = subprocess.Popen(
        ["python", "-m", "pypod", "--runid", "ticker", "--detach", code],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: "ticker" in run_cli(["ps"], env).stdout, 60, interval=0.5)
    followed = run_cli(["logs", "ticker", "-f"], env)
    assert followed.returncode == 0, followed.stderr
    assert "tick 2" in followed.stdout
    started.wait(60)
    run_cli(["rm", "--all"], env)
    no_jobs_left(kube, namespace)


@pytest.mark.parametrize(
    "args, extra_env, code, fragment",
    [
        (["print(1)"], {"KUBECONFIG": "/nonexistent/kubeconfig"}, 67, "no kubeconfig at /nonexistent/kubeconfig"),
        (["--context", "nope", "print(1)"], {}, 67, "context 'nope' is not in"),
        (["--memory", "4GG", "print(1)"], {}, 64, "invalid memory quantity '4GG'"),
        (["--env", "NOEQUALS", "print(1)"], {}, 64, "--env expects KEY=VALUE"),
        (["--template", "/nonexistent.yaml", "print(1)"], {}, 64, "cannot read template"),
    ],
)
def test_bad_input_gets_one_line_and_a_distinct_exit_code(env, tmp_path, args, extra_env, code, fragment):
    result = run_cli(args, dict(env, **extra_env), cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreachable_apiserver_is_explained(env, tmp_path, cluster):
    config = Path(cluster.admin_kubeconfig).read_text().replace(cluster.server, "https://127.0.0.1:9")
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(config)
    result = run_cli(["print(1)"], dict(env, KUBECONFIG=str(broken)), cwd=tmp_path)
    assert result.returncode == 68, result.stderr
    assert "cannot reach the Kubernetes API at https://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_name_collision_is_explained(env, kube, namespace, tmp_path):
    first = subprocess.Popen(
        ["python", "-m", "pypod", "--runid", "twice", "import time; time.sleep(30)"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: "twice" in jobs_left(kube, namespace), 30)
        result = run_cli(["--runid", "twice", "print(1)"], env, cwd=tmp_path)
        assert result.returncode == 70, result.stderr
        assert "jobs/twice already exists" in result.stderr
        assert "pypod rm" in result.stderr
    finally:
        first.kill()
        first.wait()
        run_cli(["rm", "twice"], env)


def test_dry_run_prints_the_job_and_touches_no_cluster(env, tmp_path):
    result = run_cli(["--dry-run", "--cpu", "2", "print(1)"], dict(env, KUBECONFIG="/nonexistent"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kind: Job" in result.stdout
    assert "cpu: '2'" in result.stdout or 'cpu: "2"' in result.stdout


def test_the_wait_survives_an_apiserver_restart(env, kube, namespace, tmp_path):
    from harness.cluster import restart_apiserver

    template = tmp_path / "suspended.yaml"
    template.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: $RUNID\nspec:\n  suspend: true\n  template:\n"
        "    spec:\n      containers:\n      - name: driver\n        image: $IMAGE_TAG\n        command: [$COMMAND]\n"
    )
    waiting = subprocess.Popen(
        [
            "python",
            "-m",
            "pypod",
            "--runid",
            "survivor",
            "--template",
            str(template),
            "--pending-timeout",
            "120",
            "print('ran after the restart')",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: "survivor" in jobs_left(kube, namespace), 30)
        time.sleep(1)  # pypod is now watching
        away = restart_apiserver(report=lambda _m: None)
        assert away > 0.5
        kube.patch(Job, "survivor", {"spec": {"suspend": False}}, namespace=namespace)
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert "ran after the restart" in out
