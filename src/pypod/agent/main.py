"""The agent's entry point inside the pod: ``agent.pyz ROLE ...``.

Roles: ``host`` and ``attach`` (the interactive session, session.py), ``sync``
(one side of the live folder sync, syncd.py) and ``info`` (what this pod has, resources.py).
"""

import sys


def main(argv):
    archive = sys.argv[0]
    role, rest = (argv[0], argv[1:]) if argv else ("", [])
    if role == "host":
        from .session import host_main

        return host_main(archive, rest)
    if role == "attach":
        from .session import attach

        return attach()
    if role == "sync":
        from .syncd import serve

        return serve()
    if role == "info":
        from .resources import main as info_main

        return info_main(rest)
    sys.stderr.write(
        "usage: agent.pyz host [--keep-alive S] [--detach] -- COMMAND... | attach | sync"
        " | info [--json|--export|--banner]\n"
    )
    return 2
