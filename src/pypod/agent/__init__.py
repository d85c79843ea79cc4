"""The in-pod agent (standard library only), and how pypod ships it into any image.

The agent's source travels in an environment variable of the driver container,
compressed; a one-line bootstrap given to `python3 -c` writes it to
/tmp/pypod/agent.py and runs it. So the image needs Python, not pypod.
"""

from __future__ import annotations

import base64
import zlib
from functools import cache
from pathlib import Path

AGENT_ENV = "PYPOD_AGENT"
ATTACH_ENTRYPOINT = "/tmp/pypod/attach"

BOOTSTRAP = (
    "import base64,os,runpy,sys,zlib\n"
    "os.makedirs('/tmp/pypod',exist_ok=True)\n"
    "p='/tmp/pypod/agent.py'\n"
    f"open(p,'wb').write(zlib.decompress(base64.b64decode(os.environ['{AGENT_ENV}'])))\n"
    "sys.argv=[p]+sys.argv[1:]\n"
    "runpy.run_path(p,run_name='__main__')\n"
)


@cache
def agent_payload() -> str:
    """The agent's source, zlib-compressed and base64-encoded (well under 128 KiB,
    the kernel's limit for one environment string)."""
    source = (Path(__file__).parent / "session.py").read_bytes()
    return base64.b64encode(zlib.compress(source, 9)).decode()


def host_command(python: str, keep_alive: float, detach: bool, repl: list[str] | None) -> list[str]:
    """The driver container's command for an interactive run."""
    command = [python, "-c", BOOTSTRAP, "host", "--keep-alive", str(int(keep_alive))]
    if detach:
        command.append("--detach")
    return [*command, "--", *(repl or ["auto"])]
