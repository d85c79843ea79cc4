"""`--git`: the run's code is a commit on a git remote, fetched by an initContainer
into an emptyDir at the working directory, instead of a source layer in the image.

Three parts, the first two pure:
- what was asked (`--git [URL][@REF]`) and whether a commit is on the remote: the
  decisions, from facts gathered by plain git (`ls-remote`, remote-tracking refs);
- the manifests: the initContainer (plain git: `git fetch --depth 1 origin SHA` over
  protocol v2, then a check that HEAD is that commit), its volumes, the Secret of
  `pypod git-secret`, and the same initContainer copied into Dask worker pods;
- the resolution itself (`resolve_git_source`), which runs git on this machine.

Credentials never travel in a manifest: a Secret (`token`, or `ssh-privatekey` with
`known_hosts`) is mounted as files, and git reads them through GIT_ASKPASS (a script
that `cat`s the token file) or GIT_SSH_COMMAND (a key file path). So the token is in
no argument, no environment value, no Job or pod spec, no .git/config and no log.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ProjectError, UsageError

# Alpine's git image: git and openssh-client in 30 MB. Any image with git (>= 2.26, for
# protocol v2 by default) and a POSIX sh will do: --git-image.
DEFAULT_GIT_IMAGE = "docker.io/alpine/git:v2.45.1"
INIT_CONTAINER = "pypod-git"
SOURCE_VOLUME = "pypod-source"
SECRET_VOLUME = "pypod-git-secret"
SECRET_MOUNT = "/etc/pypod/git"
DEFAULT_TOKEN_USER = "x-access-token"  # GitHub's name for a token; GitLab and Gitea take any name
ANNOTATION_GIT_URL = "pypod.dev/git-url"
ANNOTATION_GIT_COMMIT = "pypod.dev/git-commit"
ANNOTATION_GIT_REF = "pypod.dev/git-ref"
FULL_SHA = re.compile(r"[0-9a-f]{40}")
HEX = re.compile(r"[0-9a-fA-F]{4,40}")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

# POSIX sh, so Alpine's busybox and Debian's dash both run it. Every value comes from the
# environment (URL, commit: not secret); the Secret's files are read only by git's helpers.
INIT_SCRIPT = r"""set -eu
say() { printf 'pypod-git: %s\n' "$*" >&2; }
secret=/etc/pypod/git
if [ -n "${PYPOD_GIT_SECRET:-}" ]; then
  if [ -r "$secret/token" ]; then
    askpass=$(mktemp)
    cat >"$askpass" <<'ASKPASS'
#!/bin/sh
case "$1" in
  Username*) if [ -r /etc/pypod/git/username ]; then cat /etc/pypod/git/username; else echo x-access-token; fi ;;
  *) cat /etc/pypod/git/token ;;
esac
ASKPASS
    chmod 700 "$askpass"
    export GIT_ASKPASS="$askpass"
  elif [ -r "$secret/ssh-privatekey" ]; then
    if [ ! -r "$secret/known_hosts" ]; then
      say "Secret $PYPOD_GIT_SECRET has ssh-privatekey but no known_hosts; recreate it (pypod git-secret)"
      exit 2
    fi
    key=$(mktemp)
    cat "$secret/ssh-privatekey" >"$key"
    ssh="ssh -i $key -o IdentitiesOnly=yes -o BatchMode=yes"
    export GIT_SSH_COMMAND="$ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$secret/known_hosts"
  else
    say "Secret $PYPOD_GIT_SECRET has neither token nor ssh-privatekey; recreate it with pypod git-secret"
    exit 2
  fi
fi
export GIT_TERMINAL_PROMPT=0
cd "$PYPOD_GIT_DIR"
git -c init.defaultBranch=pypod init -q .
git remote add origin "$PYPOD_GIT_URL"
if ! git -c protocol.version=2 fetch -q --depth 1 --no-tags origin "$PYPOD_GIT_COMMIT"; then
  say "could not fetch commit $PYPOD_GIT_COMMIT from $PYPOD_GIT_URL"
  exit 1
fi
git -c advice.detachedHead=false checkout -q --detach FETCH_HEAD
head=$(git rev-parse HEAD)
if [ "$head" != "$PYPOD_GIT_COMMIT" ]; then
  say "HEAD is $head after the fetch, not $PYPOD_GIT_COMMIT"
  exit 1
fi
# Any user the main container runs as may write here (a REPL's sync does).
chmod -R a+rwX .
echo "pypod-git: $PYPOD_GIT_URL at $head"
"""


# -- what was asked -----------------------------------------------------------------------


@dataclass(frozen=True)
class GitSpec:
    """`--git [URL][@REF]`: None for either means the default (origin, the current commit)."""

    url: str | None = None
    ref: str | None = None


def _ref_separator(text: str) -> int:
    """Where `@REF` starts in `URL@REF`, or -1: the first '@' after the URL's host part
    (so `user@host` and `ssh://git@host/...` keep their user)."""
    if "://" in text:
        start = text.find("/", text.index("://") + 3)
        return -1 if start < 0 else text.find("@", start)
    colon, slash = text.find(":"), text.find("/")
    if colon > 0 and (slash < 0 or colon < slash):  # scp-like: [user@]host:path
        return text.find("@", colon)
    return text.find("@")


def parse_git_spec(text: str) -> GitSpec:
    """Pure: `""` (defaults), `URL`, `URL@REF` or `@REF`."""
    text = text.strip()
    if text.lower() in TRUE_WORDS:
        return GitSpec()
    at = _ref_separator(text)
    url, ref = (text, "") if at < 0 else (text[:at], text[at + 1 :])
    if at >= 0 and not ref:
        raise UsageError(f"--git {text!r} ends with '@' but names no ref", hint="e.g. --git URL@main, or drop the '@'")
    return GitSpec(url or None, ref or None)


def looks_like_git_spec(text: str) -> bool:
    """Pure: whether the word after a bare `--git` is its value (a URL, `user@host:path`,
    `@REF`) rather than the run's code or script, so `pypod --git 'print(1)'` works."""
    if text.startswith("@") or "://" in text:
        return True
    return bool(re.fullmatch(r"[\w.-]+@[\w.-]+:\S*", text))


def setting_value(value: Any) -> str | None:
    """Pure: the `git` setting from a flag, the environment or [tool.pypod]: None is off,
    "" is on with the defaults, anything else a spec."""
    if value is None or value is False:
        return None
    if value is True:
        return ""
    text = str(value).strip()
    if text.lower() in FALSE_WORDS:
        return None
    return "" if text.lower() in TRUE_WORDS else text


def check_url(url: str) -> None:
    """Pure: refuse a URL pods cannot use, or one that would put a password in the Job."""
    if re.match(r"[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", url, re.IGNORECASE):
        raise UsageError(
            "the --git URL holds a password or token, which would land in the Job's spec",
            hint="drop it from the URL and keep it in a Secret: pypod git-secret NAME --token-file F, "
            "then --git-secret NAME",
        )
    if url.startswith("file://") or url.startswith("/") or url.startswith("."):
        raise UsageError(
            f"the git remote {url} is a path on this machine, which pods cannot reach",
            hint="push to a remote the cluster reaches (https:// or ssh) and name it: --git URL",
        )


def url_kind(url: str) -> str:
    """Pure: "ssh" or "https" (for a Secret's kind, and the hints)."""
    if url.startswith(("ssh://", "git+ssh://")) or re.fullmatch(r"[\w.-]+@[\w.-]+:\S*", url):
        return "ssh"
    return "https"


# -- the facts about a remote, and the decisions ------------------------------------------


def parse_ls_remote(text: str) -> dict[str, str]:
    """Pure: `git ls-remote` output to ref name -> object id (peeled tags keep `^{}`)."""
    refs: dict[str, str] = {}
    for line in text.splitlines():
        sha, _, name = line.strip().partition("\t")
        if FULL_SHA.fullmatch(sha) and name:
            refs[name] = sha
    return refs


def match_ref(ref: str, advertised: Mapping[str, str]) -> str | None:
    """Pure: the commit `ref` names among a remote's refs, in git's order (refs/REF,
    refs/tags/REF, refs/heads/REF); an annotated tag gives the commit it points at."""
    if ref.startswith("refs/") or ref == "HEAD":
        candidates = [ref]
    else:
        candidates = [f"refs/{ref}", f"refs/tags/{ref}", f"refs/heads/{ref}"]
    for name in candidates:
        if f"{name}^{{}}" in advertised:
            return advertised[f"{name}^{{}}"]
        if name in advertised:
            return advertised[name]
    return None


@dataclass(frozen=True)
class RemoteView:
    """What this machine can tell about `commit` and the remote, gathered by git."""

    commit_known: bool  # the local repository has the commit
    on_advertised_tip: bool  # a ref the remote advertises points at it
    reachable_from_tips: bool  # a tip the remote advertises (and we have) has it as ancestor
    unknown_tips: bool  # the remote advertises tips this machine has not fetched
    tracking_contains: bool  # a remote-tracking ref (refs/remotes/<remote>/*) has it
    remote_answered: bool  # ls-remote worked


def commit_on_remote(view: RemoteView) -> bool | None:
    """Pure: True (on the remote), False (not: refuse), None (cannot tell from here:
    the initContainer's fetch will say)."""
    if view.on_advertised_tip or view.reachable_from_tips:
        return True
    if not view.commit_known:
        return None
    if not view.remote_answered or view.unknown_tips:
        # The remote moved on since our last fetch, or could not be asked: what we last
        # saw of it (our pushes update the remote-tracking refs) decides.
        return True if view.tracking_contains else (False if view.remote_answered else None)
    return False


def remote_for_url(config_text: str, url: str) -> str | None:
    """Pure: the local remote configured with `url`, from `git config --get-regexp
    '^remote\\..*\\.url$'` (the URLs as written, before any local insteadOf)."""
    for line in config_text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip() == url and key.startswith("remote.") and key.endswith(".url"):
            return key[len("remote.") : -len(".url")]
    return None


# -- the resolved source, and its manifests ---------------------------------------------


@dataclass(frozen=True)
class GitSource:
    """One exact commit of one remote, as the run's code."""

    url: str
    commit: str  # 40 hex digits
    ref: str = "HEAD"  # what it was resolved from
    secret: str | None = None  # a Secret's name: `token` or `ssh-privatekey` (+ `known_hosts`)
    image: str = DEFAULT_GIT_IMAGE

    @property
    def short(self) -> str:
        return self.commit[:7]

    def describe(self) -> str:
        named = "" if self.ref in ("HEAD", self.commit) else f" ({self.ref})"
        return f"{self.url} at {self.short}{named}"


def init_container(source: GitSource, workdir: str, resources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pure: the initContainer that fetches the commit into `workdir`.

    It gets the main container's resources: a pod's request is the larger of its init
    containers' and the sum of its containers', so this costs nothing, and a quota that
    demands limits accepts it. FallbackToLogsOnError puts the tail of a failed fetch's
    log into the pod status, where pypod reads it to end the wait at once.
    """
    env = [
        {"name": "PYPOD_GIT_URL", "value": source.url},
        {"name": "PYPOD_GIT_COMMIT", "value": source.commit},
        {"name": "PYPOD_GIT_DIR", "value": workdir},
    ]
    mounts: list[dict[str, Any]] = [{"name": SOURCE_VOLUME, "mountPath": workdir}]
    if source.secret:
        env.append({"name": "PYPOD_GIT_SECRET", "value": source.secret})  # its name only
        mounts.append({"name": SECRET_VOLUME, "mountPath": SECRET_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": INIT_CONTAINER,
        "image": source.image,
        "command": ["sh", "-c", INIT_SCRIPT],
        "env": env,
        "workingDir": workdir,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources:
        container["resources"] = copy.deepcopy(dict(resources))
    return container


def source_volumes(source: GitSource) -> list[dict[str, Any]]:
    """Pure: the emptyDir for the checkout, and the Secret's files (owner-read only)."""
    volumes: list[dict[str, Any]] = [{"name": SOURCE_VOLUME, "emptyDir": {}}]
    if source.secret:
        volumes.append({"name": SECRET_VOLUME, "secret": {"secretName": source.secret, "defaultMode": 0o400}})
    return volumes


def git_env(workdir: str) -> list[dict[str, str]]:
    """Pure: git in the main container trusts the checkout whoever owns it (safe.directory
    counts only from protected config: GIT_CONFIG_COUNT is the command line's scope)."""
    return [
        {"name": "GIT_CONFIG_COUNT", "value": "1"},
        {"name": "GIT_CONFIG_KEY_0", "value": "safe.directory"},
        {"name": "GIT_CONFIG_VALUE_0", "value": workdir},
    ]


def _merge_named(existing: list[dict[str, Any]], additions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {entry["name"] for entry in additions}
    return [entry for entry in existing if entry.get("name") not in names] + additions


def add_to_pod(pod_spec: dict[str, Any], source: GitSource, workdir: str, container: str) -> dict[str, Any]:
    """Pure: a copy of `pod_spec` whose `container` runs from the commit's checkout."""
    spec = copy.deepcopy(pod_spec)
    main = next((c for c in spec["containers"] if c.get("name") == container), spec["containers"][0])
    spec["initContainers"] = _merge_named(
        spec.get("initContainers") or [], [init_container(source, workdir, main.get("resources"))]
    )
    spec["volumes"] = _merge_named(spec.get("volumes") or [], source_volumes(source))
    main["volumeMounts"] = _merge_named(main.get("volumeMounts") or [], [{"name": SOURCE_VOLUME, "mountPath": workdir}])
    main["workingDir"] = workdir
    main["env"] = _merge_named(main.get("env") or [], git_env(workdir))
    return spec


def apply_to_job(job: dict[str, Any], source: GitSource, workdir: str, container: str) -> dict[str, Any]:
    """Pure: the driver Job with the git source: initContainer, volumes, annotations."""
    job = copy.deepcopy(job)
    template = job["spec"]["template"]
    template["spec"] = add_to_pod(template["spec"], source, workdir, container)
    annotations = {ANNOTATION_GIT_URL: source.url, ANNOTATION_GIT_COMMIT: source.commit, ANNOTATION_GIT_REF: source.ref}
    for metadata in (job.setdefault("metadata", {}), template.setdefault("metadata", {})):
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
    return job


def copy_to_worker(driver_pod: Mapping[str, Any], worker_pod: dict[str, Any], python_path: str = "") -> dict[str, Any]:
    """Pure: a copy of `worker_pod` carrying the driver pod's git source (its initContainer
    and volumes, the checkout mounted where the driver has it), so project modules import
    on the worker; unchanged when the driver has none. `python_path` is the driver's own
    PYTHONPATH (the image's), kept after the checkout."""
    spec = driver_pod.get("spec") or {}
    init = next((c for c in spec.get("initContainers") or [] if c.get("name") == INIT_CONTAINER), None)
    if init is None:
        return worker_pod
    workdir = next(m["mountPath"] for m in init.get("volumeMounts", []) if m.get("name") == SOURCE_VOLUME)
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") in (SOURCE_VOLUME, SECRET_VOLUME)]
    pod = copy.deepcopy(worker_pod)
    worker_spec = pod["spec"]
    init = copy.deepcopy(dict(init))
    # The live pod's mounts include the ones admission added (its service account token):
    # keep ours, and let the worker's own admission add its own.
    ours = (SOURCE_VOLUME, SECRET_VOLUME)
    init["volumeMounts"] = [m for m in init.get("volumeMounts") or [] if m.get("name") in ours]
    worker_spec["initContainers"] = _merge_named(worker_spec.get("initContainers") or [], [init])
    worker_spec["volumes"] = _merge_named(worker_spec.get("volumes") or [], copy.deepcopy(volumes))
    paths = [workdir, *(p for p in python_path.split(":") if p and p != workdir)]
    for container in worker_spec["containers"]:
        container["volumeMounts"] = _merge_named(
            container.get("volumeMounts") or [], [{"name": SOURCE_VOLUME, "mountPath": workdir}]
        )
        container["workingDir"] = workdir
        container["env"] = _merge_named(
            container.get("env") or [], [*git_env(workdir), {"name": "PYTHONPATH", "value": ":".join(paths)}]
        )
    annotations = (driver_pod.get("metadata") or {}).get("annotations") or {}
    kept = {k: v for k, v in annotations.items() if k in (ANNOTATION_GIT_URL, ANNOTATION_GIT_COMMIT)}
    if kept:
        metadata = pod.setdefault("metadata", {})
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **kept}
    return pod


# -- the Secret of `pypod git-secret` -------------------------------------------------------


def git_secret(
    name: str,
    *,
    token: bytes | None = None,
    username: str | None = None,
    ssh_key: bytes | None = None,
    known_hosts: bytes | None = None,
) -> dict[str, Any]:
    """Pure: the Secret for --git-secret: `token` (+ `username`) for https, or a
    kubernetes.io/ssh-auth Secret with `ssh-privatekey` and `known_hosts`."""
    if (token is None) == (ssh_key is None):
        raise UsageError(
            "pypod git-secret needs one of --token-file or --ssh-key", hint="e.g. --token-file ~/.git-token"
        )

    def encoded(data: bytes) -> str:
        return base64.b64encode(data).decode()

    metadata = {"name": name, "labels": {"app.kubernetes.io/managed-by": "pypod"}}
    if token is not None:
        value = token.strip()
        if not value or b"\n" in value:
            raise UsageError("the token file must hold one line, the token", hint="write only the token into it")
        data = {"token": encoded(value)}
        if username:
            data["username"] = encoded(username.encode())
        return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "data": data}
    assert ssh_key is not None
    if b"PRIVATE KEY" not in ssh_key:
        raise UsageError("the --ssh-key file is not a private key", hint="pass the private key, e.g. ~/.ssh/id_ed25519")
    if not known_hosts or not known_hosts.strip():
        raise UsageError(
            "an ssh Secret needs known_hosts, so the initContainer can check the git host's key",
            hint="pass --known-hosts FILE (e.g. the host's lines of ~/.ssh/known_hosts)",
        )
    data = {"ssh-privatekey": encoded(ssh_key), "known_hosts": encoded(known_hosts)}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "kubernetes.io/ssh-auth", "data": data}


# -- a failed fetch ---------------------------------------------------------------------------


def explain_clone_failure(exit_code: int | None, message: str, secret: str | None = None) -> tuple[str, str]:
    """Pure: one line and a hint from a failed initContainer's termination message (the
    tail of its log)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    telling = [line for line in lines if line.startswith(("fatal:", "error:", "remote:", "ssh:"))]
    ours = [line for line in lines if line.startswith("pypod-git:")]
    fact = (telling or ours or lines or ["no output"])[-1]
    line = f"the git initContainer could not fetch the code (exit {exit_code}): {fact}"
    text = message.lower()
    if any(
        word in text
        for word in ("authentication failed", "could not read username", "could not read password", "permission denied")
    ) or re.search(r"\b40[13]\b", text):
        hint = (
            f"the Secret {secret} was refused: check its token or key, and that it may read this repository"
            if secret
            else "the repository needs credentials: create a Secret with `pypod git-secret NAME --token-file F` "
            "(or --ssh-key) and pass --git-secret NAME"
        )
    elif any(word in text for word in ("not our ref", "no such remote ref", "couldn't find remote ref", "bad object")):
        hint = "the commit is not on the remote: push it, or name a ref that is (--git URL@REF)"
    elif any(
        word in text
        for word in ("could not resolve host", "failed to connect", "connection refused", "timed out", "no route")
    ):
        hint = "pods cannot reach the git host: check its name, the cluster's egress (proxy, network policy), the port"
    elif "host key verification failed" in text:
        hint = "the git host's key is not in the Secret's known_hosts: recreate it with the host's current key"
    elif "not found" in text and ("sh:" in text or "exec" in text):
        hint = "the --git-image has no git or no sh: pick one that has both"
    else:
        hint = "see the initContainer's log above; `--git-image` chooses its image"
    return line, hint


# -- resolving on this machine -----------------------------------------------------------------


def _git(root: Path, *args: str, timeout: float = 30, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """git in `root`, never prompting (a credential helper may still answer)."""
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError as exc:
        raise ProjectError("--git needs git on this machine", hint="install git") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProjectError(
            f"`git {' '.join(args[:2])}` took over {timeout:.0f}s", hint="check the remote is reachable"
        ) from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _remote_view(root: Path, commit: str, advertised: dict[str, str] | None, remote: str | None) -> RemoteView:
    known = _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
    tips = sorted({sha for name, sha in (advertised or {}).items() if name.startswith(("refs/heads/", "refs/tags/"))})
    present: list[str] = []
    if tips and known:
        check = _git(root, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(tips) + "\n")
        present = [line.split()[0] for line in check.stdout.splitlines() if line.endswith(" commit")]
    reachable = False
    if present:
        # Empty when every commit reachable from `commit` is reachable from a tip.
        outside = _git(root, "rev-list", "--max-count=1", commit, "--not", *present)
        reachable = outside.returncode == 0 and not outside.stdout.strip()
    tracking = False
    if remote and known:
        contains = _git(root, "for-each-ref", "--contains", commit, "--format=%(refname)", f"refs/remotes/{remote}/")
        tracking = bool(contains.stdout.strip())
    return RemoteView(
        commit_known=known,
        on_advertised_tip=commit in (advertised or {}).values(),
        reachable_from_tips=reachable,
        unknown_tips=len(present) < len(tips),
        tracking_contains=tracking,
        remote_answered=advertised is not None,
    )


def resolve_git_source(
    root: Path,
    spec: GitSpec,
    image: str = DEFAULT_GIT_IMAGE,
    secret: str | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> GitSource:
    """The commit to run: REF resolved against the remote, or the current commit, which
    must be on the remote. Raises in one line (before anything is created) when not."""
    top = _git(root, "rev-parse", "--show-toplevel")
    in_repo = top.returncode == 0
    if spec.url is None:
        if not in_repo:
            raise ProjectError(
                f"--git without a URL needs a git repository, and {root} is not in one",
                hint="run from the repository, or name it: --git URL[@REF]",
            )
        # As configured: a local insteadOf rewrite is this machine's, not the pod's.
        origin = _git(root, "config", "--get", "remote.origin.url")
        if origin.returncode != 0:
            raise ProjectError(
                "--git without a URL uses the remote `origin`, and this repository has none",
                hint="add it (git remote add origin URL) or name the URL: --git URL[@REF]",
            )
        url = origin.stdout.strip()
    else:
        url = spec.url
    check_url(url)
    remote = remote_for_url(_git(root, "config", "--get-regexp", r"^remote\..*\.url$").stdout, url) if in_repo else None
    listing = _git(root if in_repo else Path("/"), "ls-remote", url, timeout=60)
    advertised = parse_ls_remote(listing.stdout) if listing.returncode == 0 else None
    why = "" if advertised is not None else _last_line(listing.stderr)

    def refuse_unpushed(commit: str, what: str) -> None:
        where = f"{remote} ({url})" if remote else url
        raise ProjectError(
            f"{what} {commit[:7]} is not on {where}, so the pod could not fetch it",
            hint="push it first (git push), or name a ref that is on the remote: --git URL@REF",
        )

    if spec.ref is None:
        if not in_repo:
            raise ProjectError(
                "--git URL without @REF runs the current commit, and there is no repository here",
                hint="name a ref: --git URL@main",
            )
        head = _git(root, "rev-parse", "--verify", "HEAD^{commit}")
        if head.returncode != 0:
            raise ProjectError("this repository has no commit yet", hint="commit and push, then run with --git")
        commit = head.stdout.strip()
        if _git(root, "status", "--porcelain", "--untracked-files=no").stdout.strip():
            warn(f"uncommitted changes are not in the run: it runs commit {commit[:7]} as pushed")
        verdict = commit_on_remote(_remote_view(root, commit, advertised, remote))
        if verdict is False:
            refuse_unpushed(commit, "the current commit")
        if verdict is None:
            warn(f"could not check that {commit[:7]} is on {url} ({why}); the initContainer will")
        return GitSource(url, commit, "HEAD", secret, image)

    ref = spec.ref
    commit = match_ref(ref, advertised) if advertised is not None else None
    if commit is None and in_repo and advertised is None and remote:
        tracked = _git(root, "rev-parse", "--verify", "-q", f"refs/remotes/{remote}/{ref}^{{commit}}")
        if tracked.returncode == 0:
            commit = tracked.stdout.strip()
            warn(f"{url} did not answer ({why}); {ref} is {commit[:7]} as last fetched")
    if commit is None and HEX.fullmatch(ref):
        full = ref.lower() if FULL_SHA.fullmatch(ref.lower()) else None
        if in_repo:
            local = _git(root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
            full = local.stdout.strip() if local.returncode == 0 else full
        if full is None:
            raise ProjectError(
                f"{ref} is not a ref of {url}, and no commit by that name is known here",
                hint="name a branch or tag of the remote, or the full 40-digit commit",
            )
        verdict = commit_on_remote(_remote_view(root, full, advertised, remote)) if in_repo else None
        if verdict is False:
            refuse_unpushed(full, "commit")
        commit = full
    if commit is None:
        if advertised is None:
            raise ProjectError(f"cannot list the refs of {url}: {why}", hint="check the URL and your access to it")
        raise ProjectError(
            f"{url} has no branch or tag {ref!r}",
            hint=f"push it (git push origin {ref}), or name one that exists (git ls-remote {url})",
        )
    return GitSource(url, commit, ref, secret, image)
