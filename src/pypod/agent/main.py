"""The agent's entry point inside the pod: ``agent.pyz ROLE ...``.

Roles: ``host`` and ``attach`` (the interactive session, session.py), ``sync``
(one side of the live folder sync, syncd.py), ``info`` (what this pod has, resources.py)
and ``data`` (downloads onto a volume and their states, fetch.py).
"""

import sys


def main(argv):
    archive = sys.argv[0]
    role, rest = (argv[0], argv[1:]) if argv else ("", [])
    if role == "host":
        from .session import host_main

        return host_main(archive, rest)
    if role == "attach":
        from .attach import attach

        return attach()
    if role == "sync":
        from .syncd import serve

        return serve()
    if role == "info":
        from .resources import main as info_main

        return info_main(rest)
    if role == "data":
        from .fetch import main as data_main

        return data_main(rest)
    sys.stderr.write(
        "usage: agent.pyz host [--keep-alive S] [--detach] -- COMMAND... | attach | sync"
        " | info [--json|--export|--banner] | data fetch PLAN | data states DEST | data ls PATH\n"
    )
    return 2
