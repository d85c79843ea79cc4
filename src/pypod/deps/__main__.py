"""`python -m pypod.deps add|remove REQUIREMENT...`: what `pypod add --run RUN` executes in
the run's pod, where pypod's package is on the path but its command-line dependencies
(click, rich) may not be. One line out; errors as pypod's, with their exit codes."""

from __future__ import annotations

import sys

from ..errors import PypodError


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("add", "remove"):
        sys.stderr.write("usage: python -m pypod.deps add|remove REQUIREMENT...\n")
        return 64
    from . import change

    try:
        done = change(argv[1:], remove=argv[0] == "remove")
    except PypodError as exc:
        sys.stderr.write(f"pypod: {exc.one_line()}\n")
        return exc.exit_code
    sys.stdout.write(done.summary() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
