"""The distributions the pod's environment has, for the session host: recorded when the
REPL starts and again when it ends, so pypod can tell what was installed meanwhile.
Standard library only; runs on any Python >= 3.8."""

import importlib
import re

NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def snapshot():
    """{canonical name: (version, [canonical names it requires])} of every distribution
    on this interpreter's path."""
    from importlib import metadata

    importlib.invalidate_caches()
    found = {}
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:  # a broken .dist-info: skip it, as pip does
            continue
        if not name:
            continue
        requires = []
        for line in dist.requires or []:
            match = NAME.match(line)
            if match:
                requires.append(canonical(match.group(1)))
        found.setdefault(canonical(name), (dist.version or "", requires))
    return found


def installed_since(before, after):
    """What `after` has that `before` had not (new, or another version), as JSON-ready
    entries: name, version and the names each requires."""
    return [
        {"name": name, "version": version, "requires": requires}
        for name, (version, requires) in sorted(after.items())
        if name not in before or before[name][0] != version
    ]
