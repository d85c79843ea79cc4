"""The agent's entry point inside the pod: ``agent.pyz ROLE ...``.

Roles: ``host`` and ``attach`` (the interactive session, session.py), ``sync``
(one side of the live folder sync, syncd.py, kept between connections by handoff.py),
``info`` (what this pod has, resources.py) and ``data`` (downloads onto a volume and
their states, fetch.py).
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
        return sync_main(archive, rest)
    if role == "info":
        from .resources import main as info_main

        return info_main(rest)
    if role == "data":
        from .fetch import main as data_main

        return data_main(rest)
    sys.stderr.write(
        "usage: agent.pyz host [--keep-alive S] [--detach] -- COMMAND... | attach | sync [--linger S KEY]"
        " | info [--json|--export|--banner] | data fetch PLAN | data states DEST | data ls PATH\n"
    )
    return 2


def sync_main(archive, rest):
    """``sync [--linger SECONDS KEY]``: serve the sync on stdin and stdout. With --linger,
    first offer them to a copy of this agent kept for KEY (handoff.py), and leave one
    behind afterwards."""
    linger = None
    if rest:
        try:
            flag, seconds, key = rest
            if flag != "--linger" or not 0 <= float(seconds) < 1e9:  # (nan and inf: no)
                raise ValueError(flag)
        except ValueError:
            sys.stderr.write("pypod-agent: usage: sync [--linger SECONDS KEY]\n")
            return 2
        from .handoff import hand_over, socket_path

        path = socket_path(archive, key)
        if path is not None:
            handed = hand_over(path)
            if handed:
                return 0
            if handed is None:
                sys.stderr.write("pypod-agent: the sync agent kept in this pod went away mid-connection\n")
                return 1
            linger = (path, float(seconds))
    from .syncd import serve

    return serve(linger=linger)
