"""Registry auth: answer a registry's 401 challenges, as the docker client does.

Credentials come from docker's config and its credential helpers (looked up by oras-py).
A registry asking for Basic gets them on every request from then on; a token registry
(GHCR, Docker Hub, Harbor, GitLab) gets a bearer token per repository from its token
service, with the credentials or anonymously. oras-py's own token auth keeps one token
and re-sends it for every repository, which those registries refuse as soon as a push
touches a second repository (the base image's, then the target's): hence this module.

State is kept per registry host for the whole process, so the several Registry objects
of one run (and their upload threads) look credentials up and fetch tokens once.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import RegistryError

SCHEMES = ("bearer", "basic")


@dataclass(frozen=True)
class Challenge:
    """One WWW-Authenticate challenge: how the registry wants a request authenticated."""

    scheme: str  # "basic" or "bearer"
    realm: str = ""
    service: str = ""
    scopes: tuple[str, ...] = ()


def parse_challenge(header: str) -> Challenge:
    """Pure: the challenge to answer from a WWW-Authenticate value, bearer before basic.
    requests joins several headers with ", ", and parameters may be unquoted."""
    parts = re.split(r",\s*(?=[A-Za-z]+\s+[A-Za-z]+=)", header.strip())
    challenges = []
    for part in parts:
        scheme, _, params = part.strip().partition(" ")
        values = {k: quoted or plain for k, quoted, plain in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', params)}
        scopes = tuple(values.get("scope", "").split())
        challenges.append(Challenge(scheme.lower(), values.get("realm", ""), values.get("service", ""), scopes))
    for scheme in SCHEMES:
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return challenges[0] if challenges else Challenge("")


def repository_of(path: str) -> str:
    """Pure: the repository an API path is about ("" for /v2/ itself), the key a bearer
    token is kept under: a token grants scopes on named repositories only."""
    parts = path.split("?", 1)[0].strip("/").split("/")[1:]
    # Read from the end: <name>/manifests/<ref>, /blobs/<digest>, /tags/list,
    # /blobs/uploads/ and /blobs/uploads/<id>; a name may contain those words too.
    if len(parts) >= 3 and parts[-2] in ("manifests", "blobs", "tags"):
        return "/".join(parts[:-2])
    if len(parts) >= 4 and parts[-3:-1] == ["blobs", "uploads"]:
        return "/".join(parts[:-3])
    return ""


def mount_source_scope(path: str) -> tuple[str, ...]:
    """Pure: a cross-repository mount also needs pull on the source repository; the
    docker client asks for it itself rather than trust the challenge to name it."""
    query = parse_qs(urlsplit(path).query)
    return (f"repository:{query['from'][0]}:pull",) if "from" in query and "mount" in query else ()


def same_origin(url: str, scheme: str, host: str) -> bool:
    """Pure: whether `url` (an upload Location) is on the registry itself; credentials
    never go to another host (blob storage a registry redirects uploads to)."""
    parts = urlsplit(url)
    return not parts.netloc or (parts.scheme == scheme and parts.netloc == host)


@dataclass
class HostAuth:
    """What one registry host asked for, and what it granted; shared by the process."""

    host: str
    insecure: bool
    credentials: str | None = None  # base64 "user:password"
    looked_up: bool = False
    basic: bool = False  # the registry asked for Basic: send it up front from now on
    tokens: dict[str, str] = field(default_factory=dict)  # repository -> bearer token
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find_credentials(self, oras_auth: Any, configs: list[str]) -> str | None:
        with self.lock:
            if not self.looked_up:
                from oras.container import Container

                try:
                    oras_auth.load_configs(Container(f"{self.host}/library"), configs=configs)
                except ValueError as exc:  # a config file that is not JSON
                    raise RegistryError(
                        f"docker's config {', '.join(configs)} could not be read: {exc}",
                        hint="fix the file (it must be JSON) or move it aside; `docker login` rewrites it",
                    ) from exc
                self.credentials = getattr(oras_auth, "_basic_auth", None) or None
                self.looked_up = True
            return self.credentials

    def header(self, repository: str) -> dict[str, str]:
        if self.basic and self.credentials:
            return {"Authorization": f"Basic {self.credentials}"}
        token = self.tokens.get(repository)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def answer(self, session: Any, header: str, repository: str, extra_scopes: tuple[str, ...] = ()) -> bool:
        """Act on a 401's challenge; True when a retry may now succeed."""
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if not self.credentials:
                raise RegistryError(
                    f"registry {self.host} requires a login and no credentials for it were found",
                    hint=f"log in (docker login {self.host}) or add it to ~/.docker/config.json",
                )
            if self.basic:
                return False  # they were sent, and refused
            self.basic = True
            return True
        if challenge.scheme != "bearer" or not challenge.realm:
            return False
        token = self._fetch_token(session, challenge, extra_scopes)
        with self.lock:
            if self.tokens.get(repository) == token:
                return False  # the same grant again: retrying cannot help
            self.tokens[repository] = token
        return True

    def _fetch_token(self, session: Any, challenge: Challenge, extra_scopes: tuple[str, ...]) -> str:
        import requests

        scopes = [*challenge.scopes, *(s for s in extra_scopes if s not in challenge.scopes)]
        params = [("service", challenge.service)] if challenge.service else []
        params += [("scope", scope) for scope in scopes]
        plain = challenge.realm.startswith("http://")
        if plain and self.credentials and not self.insecure:
            raise RegistryError(
                f"registry {self.host} sends logins to a plain-HTTP token service ({challenge.realm})",
                hint=f"pypod does not send passwords unencrypted; list {self.host} in PYPOD_INSECURE_REGISTRIES "
                "if that is intended",
            )
        # Anonymous without credentials: public images are readable that way.
        basic = {"Authorization": f"Basic {self.credentials}"} if self.credentials else {}
        try:
            answer = session.get(challenge.realm, params=params, headers=basic, verify=not plain, timeout=30)
            body = answer.json() if answer.ok else {}
            token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        except (requests.RequestException, ValueError) as exc:
            raise RegistryError(
                f"the token service of registry {self.host} ({challenge.realm}) did not answer properly "
                f"({type(exc).__name__})",
                hint="check that the registry is reachable and try again",
            ) from exc
        if answer.status_code != 200 or not isinstance(token, str) or not token:
            who = "our credentials" if basic else "an anonymous request"
            raise RegistryError(
                f"the token service of registry {self.host} refused {who} ({answer.status_code})",
                hint=f"log in again (docker login {self.host}) or fix ~/.docker/config.json",
            )
        return token


_HOSTS: dict[tuple[str, bool, tuple[str, ...]], HostAuth] = {}
_HOSTS_LOCK = threading.Lock()


def host_auth(host: str, insecure: bool, configs: tuple[str, ...]) -> HostAuth:
    """The shared state for `host` as seen through these docker config files."""
    with _HOSTS_LOCK:
        return _HOSTS.setdefault((host, insecure, configs), HostAuth(host, insecure))
