"""The in-pod agent (standard library only), and how pypod ships it into any image.

The agent's modules travel as one zip application (`python agent.pyz ROLE`), so
the image needs Python 3.8+, not pypod. Two ways in:

- the driver of an interactive run gets the archive in an environment variable;
  a one-line bootstrap given to `python3 -c` writes it out and runs the host;
- any other pod gets it over the exec stream: a loader given to `python3 -c`
  reads the archive's bytes from stdin, then the same stdin carries the protocol.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

AGENT_ENV = "PYPOD_AGENT"
ATTACH_ENTRYPOINT = "/tmp/pypod/attach"
PACKAGE = "pypod_agent"  # the agent's package name inside the archive
MODULES = (
    "attach",
    "cgroups",
    "dists",
    "fetch",
    "frames",
    "gpus",
    "handoff",
    "main",
    "mounts",
    "podvars",
    "resources",
    "session",
    "syncd",
    "tmpdir",
    "tree",
    "watcher",
)

# The agent's entry, imported straight from the archive or its unpacked copy: runpy
# would cost a new process ~7 ms of imports.
_RUN_MAIN = f"sys.path.insert(0,p)\nfrom {PACKAGE}.main import main\nsys.exit(main(sys.argv[1:]))\n"

BOOTSTRAP = (
    "import base64,os,sys\n"
    "os.makedirs('/tmp/pypod',exist_ok=True)\n"
    "p='/tmp/pypod/agent.pyz'\n"
    f"open(p,'wb').write(base64.b64decode(os.environ['{AGENT_ENV}']))\n"
    "sys.argv=[p]+sys.argv[1:]\n" + _RUN_MAIN
)

# argv: <archive size> <archive sha1> ROLE ...; the archive's bytes come first on stdin.
# It is unpacked once per pod into a directory named by its digest, so Python keeps
# the compiled modules there (__pycache__, even where the image sets
# PYTHONDONTWRITEBYTECODE: it is pypod's own cache) and later connections start faster.
# The directory is tempfile.gettempdir()'s, chosen as agent/tmpdir.py chooses it
# (tempfile itself costs ~13 ms to import).
STDIN_LOADER = (
    "import os,sys\n"
    "n=int(sys.argv[1]);b=bytearray()\n"
    "while len(b)<n:\n"
    " c=os.read(0,n-len(b))\n"
    " if not c:sys.exit(3)\n"
    " b+=c\n"
    "t=[os.environ.get(v) for v in ('TMPDIR','TEMP','TMP')]+['/tmp','/var/tmp','/usr/tmp']\n"
    "d=next((os.path.abspath(x) for x in t if x and os.path.isdir(x) and os.access(x,os.W_OK|os.X_OK)),None)\n"
    "d=os.path.join(d or os.getcwd(),'pypod');os.makedirs(d,exist_ok=True)\n"
    "p=os.path.join(d,'agent-%s'%sys.argv[2])\n"
    "if not os.path.isfile(os.path.join(p,'__main__.py')):\n"
    " import io,shutil,zipfile\n"
    " t='%s.%d'%(p,os.getpid());zipfile.ZipFile(io.BytesIO(b)).extractall(t)\n"
    " try:os.rename(t,p)\n"
    " except OSError:shutil.rmtree(t,True)\n"
    "sys.argv=[p]+sys.argv[3:];sys.dont_write_bytecode=False\n" + _RUN_MAIN
)

_MAIN = f"import sys\nfrom {PACKAGE}.main import main\nsys.exit(main(sys.argv[1:]))\n"


@cache
def agent_archive() -> bytes:
    """The agent as a zip application; byte-for-byte the same for the same sources."""
    here = Path(__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:

        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)

        add("__main__.py", _MAIN.encode())
        add(f"{PACKAGE}/__init__.py", b"")
        for module in MODULES:
            add(f"{PACKAGE}/{module}.py", (here / f"{module}.py").read_bytes())
    return buffer.getvalue()


@cache
def agent_payload() -> str:
    """The archive, base64-encoded for an environment variable (well under 128 KiB,
    the kernel's limit for one environment string)."""
    return base64.b64encode(agent_archive()).decode()


def host_command(python: str, keep_alive: float, detach: bool, repl: list[str] | None) -> list[str]:
    """The driver container's command for an interactive run."""
    command = [python, "-c", BOOTSTRAP, "host", "--keep-alive", str(int(keep_alive))]
    if detach:
        command.append("--detach")
    return [*command, "--", *(repl or ["auto"])]


def sync_command(python: str, root: str, excludes: dict[str, Any], linger_s: float) -> tuple[list[str], bytes]:
    """The exec command of a sync agent for `root` that, once its connection ends, keeps
    its index and watches for `linger_s` seconds for the next connection with the same
    root and excludes (handoff.py), and the bytes to send first."""
    spec = json.dumps([root, excludes], sort_keys=True).encode("utf-8", "surrogateescape")
    key = hashlib.sha1(spec).hexdigest()[:20]
    return stdin_command(python, "sync", "--linger", str(int(linger_s)), key)


def stdin_command(python: str, role: str, *args: str) -> tuple[list[str], bytes]:
    """The exec command that runs `role` in any pod with Python, and the bytes to send first."""
    archive = agent_archive()
    digest = hashlib.sha1(archive).hexdigest()[:16]
    return [python, "-c", STDIN_LOADER, str(len(archive)), digest, role, *args], archive
