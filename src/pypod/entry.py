"""The `pypod` console entry point: `pypod --help` answered without importing click.

Importing click costs about 55 ms in a clean venv, more than all of kubectl's
`--help`. The top-level help is the same text click renders (tests/unit/test_entry.py
holds them equal); it is printed here only when click would render it at this width,
and every other command line goes to pypod.cli.
"""

from __future__ import annotations

import os
import sys

# click renders at min(terminal columns, 80) - 2; at 80 columns or more that is 78.
HELP_WIDTH = 78

HELP = """\
Usage: pypod [OPTIONS] COMMAND [ARGS]...

  Run a Python project on Kubernetes: a REPL in a pod, or a job.

    pypod                      REPL in a pod (same as `pypod start`)
    pypod 'print(1)'           run code as a job; exit code is pypod's
    pypod run script.py ARGS   run a script as a job
    pypod attach RUN           reconnect to a live REPL

Options:
  --version   Show the version and exit.
  -h, --help  Show this message and exit.

Commands:
  add         Add REQUIREMENTS (PEP 508: six, 'requests>=2') to the...
  attach      Reconnect to the live REPL of RUN.
  dashboard   Forward the Dask dashboard of a K8sCluster in RUN to this...
  data        Data on PVCs: download onto one (a Job that resumes and...
  git-secret  Create the Secret NAME for `--git-secret NAME`: a token...
  info        What this machine, or RUN's pod, really has (CPU, memory,...
  jupyter     Start JupyterLab in a pod, forwarded to a local port;...
  logs        Print the driver's log of RUN.
  plan        Show the settings and where each came from, the environment...
  ps          List runs: status, age, node, image.
  rbac        Print the minimal Role (and RoleBinding) pypod needs; pipe...
  remove      Take NAMES out of the project's dependency file (and, in a...
  rm          Delete runs (their Jobs and pods).
  run         Run SCRIPT (a path in the image's working directory) with...
  start       Start a REPL in a pod, or with CODE, run it as a job.
  sync        Sync this project folder with RUN's pod, live, until Ctrl-C.
  template    Write the default driver template for editing.
"""


def terminal_columns() -> int:
    """Columns as shutil.get_terminal_size (which click asks) reports them."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def is_top_help(argv: list[str]) -> bool:
    """The command line asks for the top-level help, and click would render HELP for it."""
    return len(argv) == 1 and argv[0] in ("-h", "--help") and terminal_columns() >= HELP_WIDTH + 2


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if is_top_help(args):
        sys.stdout.write(HELP)
        sys.stdout.flush()
        sys.exit(0)
    from .cli import main as cli_main

    cli_main(args)
