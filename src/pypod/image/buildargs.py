"""`--build-arg KEY=VALUE` for a project's own Dockerfile, and why it never carries secrets.

A build argument is recorded in the image: `docker history` shows it for every RUN
that uses it, and buildx adds it to the provenance attestation. So pypod refuses
the ones that look like credentials, and points at the build secret it already
hands every build (`pypod_env`: the index URLs and GITHUB_TOKEN_FILE of the
environment, read with `RUN --mount=type=secret,id=pypod_env`).
"""

from __future__ import annotations

import re

from ..errors import UsageError

ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words of a key (split at _ and -) that name a credential.
SECRET_WORDS = frozenset(
    {"TOKEN", "TOKENS", "PASSWORD", "PASSWD", "PASS", "SECRET", "SECRETS", "CREDENTIAL", "CREDENTIALS"}
    | {"CREDS", "AUTH", "APIKEY", "PAT", "NETRC", "COOKIE"}
)
SECRET_PAIRS = ("API_KEY", "ACCESS_KEY", "SECRET_KEY", "PRIVATE_KEY", "SSH_KEY", "AUTH_KEY", "CLIENT_KEY")
# Index URLs go to installs as a secret (builders.SECRET_ENV), with the tools' other names for them.
INDEX_KEYS = re.compile(
    r"(^|_)(INDEX_URL|EXTRA_INDEX_URL|INDEX|DEFAULT_INDEX|FIND_LINKS|REGISTRY_URL|TRUSTED_HOST)$|"
    r"^(PIP|UV|POETRY|PDM|PIPENV|CONDA|MAMBA|NPM_CONFIG)_.*(URL|INDEX|REPOSITOR(Y|IES)|HTTP_BASIC.*)$"
)
# A URL with user information (user:password@ or token@) carries a credential.
URL_WITH_USER = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s]+@", re.IGNORECASE)
# The shapes of well-known tokens: GitHub, GitLab, Slack, AWS access keys, PyPI.
TOKEN_VALUE = re.compile(r"(gh[pousr]_|github_pat_|glpat-|xox[abprs]-|pypi-)[A-Za-z0-9_-]{8,}|AKIA[0-9A-Z]{16}")
POINTER = (
    "Build arguments are recorded in the image's history. Give index URLs and tokens to pypod's build "
    "secret instead: set PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (or UV_INDEX_URL) and GITHUB_TOKEN_FILE "
    "in the environment, and read them in the Dockerfile with "
    "`RUN --mount=type=secret,id=pypod_env . /run/secrets/pypod_env && ...` (README: build secrets)"
)


def secret_reason(key: str, value: str) -> str | None:
    """Pure: why KEY=VALUE looks like a credential or an index URL, or None."""
    upper = key.upper()
    words = set(re.split(r"[_\-]+", upper))
    if words & SECRET_WORDS or any(pair in upper for pair in SECRET_PAIRS):
        return f"its name {key!r} looks like a credential"
    if INDEX_KEYS.search(upper):
        return f"{key} names a package index"
    if URL_WITH_USER.search(value):
        return "its value is a URL with a user or password in it"
    if TOKEN_VALUE.search(value):
        return "its value looks like an access token"
    return None


def check_build_args(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The pairs, if each is a valid and safe build argument; else a UsageError (exit 64).
    The message names the key, never the value."""
    for key, value in pairs:
        if not ARG_NAME.fullmatch(key):
            raise UsageError(
                f"--build-arg {key!r} is not a valid argument name", hint="use letters, digits and _, e.g. VERSION=1.2"
            )
        reason = secret_reason(key, value)
        if reason:
            raise UsageError(f"--build-arg {key} is refused: {reason}", hint=POINTER)
    return pairs
