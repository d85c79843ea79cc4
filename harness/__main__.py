"""harness: build and run a local Kubernetes for pypod's tests and for trying pypod.

python -m harness build     # Debian packages, Go builds, images (cached)
python -m harness up        # start the cluster; prints the kubeconfig
python -m harness status
python -m harness env       # `eval $(python -m harness env)` for KUBECONFIG etc.
python -m harness start     # start services missing from a running harness (git server, ...)
python -m harness down      # stop exactly what `up` started
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from .errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="install packages, build Kubernetes, kwok and the images")
    up_parser = sub.add_parser("up", help="start the cluster (builds first if needed)")
    up_parser.add_argument("--no-build", action="store_true", help="fail instead of building what is missing")
    sub.add_parser("down", help="stop the cluster and undo its changes to the machine")
    start_parser = sub.add_parser("start", help="start services missing from a running harness (restarts nothing)")
    start_parser.add_argument(
        "services",
        nargs="*",
        help="default: every service (gitserver, gitssh, local-path-provisioner, data-server, pyindex)",
    )
    status_parser = sub.add_parser("status", help="show what is running")
    status_parser.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print shell exports for the running cluster")
    args = parser.parse_args(argv)

    from . import cluster
    from .build import build
    from .layout import Layout

    layout = Layout.default()
    try:
        if args.command == "build":
            build(layout)
        elif args.command == "up":
            if not args.no_build:
                build(layout, report=lambda m: print(m, flush=True))
            cluster.up(layout, report=lambda m: print(m, flush=True))
        elif args.command == "down":
            cluster.down(layout)
        elif args.command == "start":
            cluster.start_services(layout, lambda m: print(m, flush=True), tuple(args.services) or cluster.SERVICES)
        elif args.command == "status":
            state = cluster.status(layout)
            if args.json:
                print(json.dumps(state, indent=2))
            else:
                print(f"up: {state['up']}")
                for name, value in state["components"].items():  # type: ignore[union-attr]
                    print(f"  {name:24} {value}")
                for key in (
                    "kubeconfig",
                    "registry",
                    "git_server",
                    "git_ssh",
                    "pyindex",
                    "ready_nodes",
                    "bridge",
                    "drop_rule",
                ):
                    if key in state:
                        print(f"  {key:24} {state[key]}")
                for name, check in state.get("health", {}).items():  # type: ignore[union-attr]
                    print(f"  {name + ' health':24} {'ok' if check['ok'] else 'FAILING'}: {check['detail']}")
                    for line in str(check.get("log_tail", "")).splitlines():
                        print(f"    | {line}")
            healthy = all(check["ok"] for check in state.get("health", {}).values())  # type: ignore[union-attr]
            return 0 if state["up"] and healthy else 3
        elif args.command == "env":
            if not cluster.is_up(layout):
                raise HarnessError("the harness is not up", hint="run `python -m harness up`")
            info = cluster.ClusterInfo.load(layout.env_file)
            for key, value in info.env().items():
                print(f"export {key}={shlex.quote(value)}")
    except HarnessError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
