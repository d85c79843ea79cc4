"""The agent's entry point inside the pod: ``agent.pyz ROLE ...``.

Roles: ``host`` and ``attach`` (the interactive session, session.py) and ``sync``
(one side of the live folder sync, syncd.py).
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
    sys.stderr.write("usage: agent.pyz host [--keep-alive S] [--detach] -- COMMAND... | attach | sync\n")
    return 2
