"""The distributions the pod's environment has, for the session host: listed when the
REPL starts and again when it ends, so pypod can tell what was installed meanwhile.
Standard library only; runs on any Python >= 3.8."""

import os
import re
import sys

NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
EGG_PYTHON_TAG = re.compile(r"-py\d+(\.\d+)*$")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def listing(paths=None):
    """{canonical name: version} of every distribution on the path, from the names of
    its .dist-info and .egg-info entries, as installers write them ("{name}-{version}";
    an egg's may add "-py3.11", or lack the version). Read without importlib.metadata,
    whose import alone costs ~100 ms of a starting pod's CPU; the first on the path wins,
    as for imports."""
    found = {}
    for entry in sys.path if paths is None else paths:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:  # a zip on the path, or a folder that is gone
            continue
        for entry_name in names:
            if entry_name.endswith(".dist-info"):
                name, _, version = entry_name[: -len(".dist-info")].rpartition("-")
            elif entry_name.endswith(".egg-info"):
                stem = EGG_PYTHON_TAG.sub("", entry_name[: -len(".egg-info")])
                name, _, version = stem.partition("-")
            else:
                continue
            if name:
                found.setdefault(canonical(name), version)
    return found


def requirements(names):
    """{canonical name: [canonical names it requires]} of the distributions named; reads
    importlib.metadata only when there are any."""
    wanted, found = set(names), {}
    if not wanted:
        return found
    import importlib
    from importlib import metadata

    importlib.invalidate_caches()  # a finder's cached listing predates the installs
    for dist in metadata.distributions():
        try:
            name = canonical(dist.metadata["Name"] or "")
        except Exception:  # a broken .dist-info: skip it, as pip does
            continue
        if name in wanted and name not in found:
            found[name] = [canonical(m.group(1)) for m in map(NAME.match, dist.requires or []) if m]
    return found


def installed_since(before, after, requires=requirements):
    """What listing `after` has that `before` had not (new, or another version), as
    JSON-ready entries: name, version and the names each requires."""
    gained = sorted(name for name, version in after.items() if before.get(name) != version)
    needs = requires(gained)
    return [{"name": name, "version": after[name], "requires": needs.get(name, [])} for name in gained]
