"""Names that Kubernetes accepts: DNS-1123 labels of at most 63 characters, and
label values, whatever a repository or branch is called.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

MAX_LABEL = 63
# The Job controller names its pod `<job>-<5 chars>`; keep that within a label too.
MAX_RUN_NAME = MAX_LABEL - 6
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_fragment(text: str) -> str:
    """Lower-case `text` and squeeze everything but [a-z0-9] into single dashes."""
    return _NOT_DNS.sub("-", text.lower()).strip("-")


def shorten(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters; a cut one keeps a short hash of the whole, so
    two long names differing only at the end stay distinct."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    head = text[: max(0, limit - len(digest) - 1)].rstrip("-")
    return f"{head}-{digest}" if head else digest[:limit]


def run_name(repo: str, branch: str, now: float | None = None, suffix: str | None = None) -> str:
    """`<repo>-<branch>-<yymmdd-hhmmss>-<4 random>`: descriptive and unique per run.

    The unique tail is never cut; repo and branch share what remains of MAX_RUN_NAME.
    """
    stamp = time.strftime("%y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    tail = f"{stamp}-{suffix or secrets.token_hex(2)}"
    room = MAX_RUN_NAME - len(tail) - 1
    parts = [p for p in (dns_fragment(repo), dns_fragment(branch)) if p]
    head = shorten("-".join(parts), room).strip("-") if parts else "pypod"
    return f"{head}-{tail}" if head else tail


def validate_run_name(name: str) -> str | None:
    """None when `name` is a usable run name, else what is wrong with it."""
    if len(name) > MAX_RUN_NAME:
        return f"is {len(name)} characters; at most {MAX_RUN_NAME} fit (the pod adds 6)"
    if not DNS_LABEL.match(name):
        return "must be lower-case letters, digits and '-', starting and ending with a letter or digit"
    return None


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9._-], alphanumeric at both ends)."""
    cleaned = _NOT_LABEL_VALUE.sub("-", text).strip("-._")
    return shorten(cleaned, MAX_LABEL).strip("-._")


# generateName: the apiserver appends 5 random characters to the prefix.
GENERATED_SUFFIX = 5
MAX_NAME_PREFIX = MAX_RUN_NAME - GENERATED_SUFFIX  # including its trailing "-"


def name_prefix(repo: str, branch: str, runid: str | None = None) -> str:
    """The metadata.generateName of a run's Job: `<runid>-` or `<repo>-<branch>-`, cut so the
    name the apiserver makes from it is still a valid run name."""
    base = dns_fragment(runid) if runid else "-".join(p for p in (dns_fragment(repo), dns_fragment(branch)) if p)
    return shorten(base or "pypod", MAX_NAME_PREFIX - 1).strip("-") + "-"
