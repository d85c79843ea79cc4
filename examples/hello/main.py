"""pypod's example job: prints where it runs and what it was given, then exits."""

import os
import platform
import sys


def main() -> int:
    print(f"hello from pod {os.environ.get('POD_NAME', '?')} on node {os.environ.get('NODE_NAME', '?')}")
    print(f"python {platform.python_version()}, args {sys.argv[1:]}")
    print(f"run {os.environ.get('PYPOD_RUN', '?')}, working directory {os.getcwd()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
