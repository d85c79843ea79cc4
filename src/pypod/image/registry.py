"""Speak the OCI distribution API: look images up, and append the source layer to a
dependency image without a daemon or a rebuild, in the manner of `crane append`.

oras-py finds credentials (~/.docker/config.json, credential helpers) and holds the
HTTP session; regauth answers the registry's challenges (anonymous, Basic, bearer tokens
per repository). pypod adds what oras-py leaves out: manifest lists, docker media types,
cross-repository blob mounts, and the config rewrite.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from . import DEFAULT_PLATFORM
from .layer import LAYER_MEDIA_TYPE, Layer
from .regauth import host_auth, mount_source_scope, repository_of, same_origin

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST]
# Docker's media types have exact OCI equivalents; the blobs are the same bytes.
TO_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_MEDIA_TYPE,
    "application/vnd.docker.container.image.v1+json": OCI_CONFIG,
}


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        rest, _, digest = text.partition("@")
        first, _, remainder = rest.partition("/")
        if not remainder or ("." not in first and ":" not in first and first != "localhost"):
            raise RegistryError(
                f"image {text!r} names no registry host",
                hint="use a full reference such as registry.example.com/team/app or 127.0.0.1:5000/app",
            )
        repository, tag = remainder, None
        if ":" in remainder.rsplit("/", 1)[-1]:
            repository, _, tag = remainder.rpartition(":")
        return cls(first, repository, tag, digest or None)

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, None, digest)

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.registry}/{self.repository}@{self.digest}"
        return f"{self.registry}/{self.repository}:{self.tag or 'latest'}"


def is_insecure(registry: str) -> bool:
    """Plain HTTP for loopback registries and those listed in PYPOD_INSECURE_REGISTRIES."""
    host = registry.rsplit(":", 1)[0]
    listed = {r.strip() for r in os.environ.get("PYPOD_INSECURE_REGISTRIES", "").split(",") if r.strip()}
    return host in ("localhost", "127.0.0.1", "::1") or registry in listed or host in listed


def docker_configs() -> list[str]:
    """Docker's credentials file: $DOCKER_CONFIG/config.json, else ~/.docker/config.json
    (oras-py itself reads only the latter)."""
    folder = os.environ.get("DOCKER_CONFIG")
    path = Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"
    return [str(path)] if path.exists() else []


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class PushReport:
    uploaded_bytes: int = 0
    uploaded_blobs: int = 0
    mounted_blobs: int = 0
    skipped_blobs: int = 0

    def add(self, other: PushReport) -> None:
        self.uploaded_bytes += other.uploaded_bytes
        self.uploaded_blobs += other.uploaded_blobs
        self.mounted_blobs += other.mounted_blobs
        self.skipped_blobs += other.skipped_blobs


# Seconds to connect, and to wait for each read; a registry that stops answering must
# not hang pypod.
TIMEOUT = (15, 300)


class Registry:
    """One registry host: the distribution API over oras-py's HTTP session, with
    regauth answering the registry's challenges (state shared per host)."""

    def __init__(self, host: str) -> None:
        import oras.provider

        self.host = host
        self.insecure = is_insecure(host)
        self.prefix = "http" if self.insecure else "https"
        self.oras = oras.provider.Registry(hostname=host, insecure=self.insecure, auth_backend="token")
        self.session = self.oras.session
        configs = tuple(docker_configs())
        self.auth = host_auth(host, self.insecure, configs)
        self.auth.find_credentials(self.oras.auth, list(configs))

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import requests

        try:
            yield
        except requests.ConnectionError as exc:
            raise RegistryError(
                f"registry {self.host} is unreachable while trying to {what}",
                hint="check the registry address (IMAGE_REPO, --base-image or --image) and that it is running",
            ) from exc
        except requests.RequestException as exc:  # timeouts, broken transfers, redirect loops
            raise RegistryError(
                f"registry {self.host} did not answer properly while trying to {what} ({type(exc).__name__})",
                hint="try again; if it persists, check the registry's health",
            ) from exc

    def _send(self, method: str, url: str, repository: str, headers: dict[str, str], **kwargs: Any):  # type: ignore[no-untyped-def]
        own = same_origin(url, self.prefix, self.host)
        send = {**headers, **(self.auth.header(repository) if own else {})}
        return self.session.request(method, url, headers=send, verify=not self.insecure, timeout=TIMEOUT, **kwargs)

    def _request(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        repository = repository_of(path)
        url = f"{self.prefix}://{self.host}{path}"
        response = self._send(method, url, repository, headers or {}, **kwargs)
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and self.auth.answer(
            self.session, challenge, repository, mount_source_scope(path)
        ):
            response = self._send(method, url, repository, headers or {}, **kwargs)
        if response.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.host} answered {response.status_code} to {method} {path}",
                hint=f"log in to {self.host} (docker login) or check your permissions on it",
            )
        return response

    # -- reading -------------------------------------------------------------
    def manifest_digest(self, ref: ImageRef) -> str | None:
        """The digest a tag points at, or None if it does not exist (HEAD only)."""
        with self._errors(f"look up {ref}"):
            response = self._request(
                "HEAD", f"/v2/{ref.repository}/manifests/{ref.reference}", headers={"Accept": ", ".join(ACCEPT)}
            )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(f"HEAD {ref} answered {response.status_code}")
        return response.headers.get("Docker-Content-Digest")

    def manifest(self, ref: ImageRef, platform: str = DEFAULT_PLATFORM) -> tuple[str, dict[str, Any]]:
        """(digest, manifest) of an image; a manifest list is resolved for `platform`."""
        with self._errors(f"read {ref}"):
            response = self._request(
                "GET", f"/v2/{ref.repository}/manifests/{ref.reference}", headers={"Accept": ", ".join(ACCEPT)}
            )
        if response.status_code == 404:
            raise RegistryError(f"image {ref} not found", hint="check the name and tag, or push it first")
        if response.status_code != 200:
            raise RegistryError(f"GET manifest {ref} answered {response.status_code}: {response.text[:200]}")
        manifest = response.json()
        digest = response.headers.get("Docker-Content-Digest") or sha256_digest(response.content)
        if manifest.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
            for entry in manifest["manifests"]:
                plat = entry.get("platform", {})
                if platform_matches(config_platform(plat), platform):
                    return self.manifest(ref.with_digest(entry["digest"]), platform)
            raise RegistryError(f"image {ref} has no {platform} variant", hint="pick an image built for it")
        return digest, manifest

    def blob_json(self, ref: ImageRef, digest: str) -> dict[str, Any]:
        with self._errors(f"read a blob of {ref}"):
            response = self._request("GET", f"/v2/{ref.repository}/blobs/{digest}")
        if response.status_code != 200:
            raise RegistryError(f"GET blob {digest} of {ref} answered {response.status_code}")
        return response.json()

    def has_blob(self, repository: str, digest: str) -> bool:
        with self._errors("check a blob"):
            return self._request("HEAD", f"/v2/{repository}/blobs/{digest}").status_code == 200

    # -- writing -------------------------------------------------------------
    def _mount(self, repository: str, digest: str, source: str) -> bool:
        with self._errors("mount a blob"):
            response = self._request("POST", f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}")
            location = response.headers.get("Location", "")
            if response.status_code == 202 and location:
                # Not mounted: the registry opened an upload instead; close it.
                url = f"{self.prefix}://{self.host}{location}" if location.startswith("/") else location
                self._send("DELETE", url, repository, {})
        return response.status_code == 201

    def _upload(self, repository: str, path: Path, digest: str, start: Any) -> None:
        with self._errors("upload a blob"):
            if start.status_code != 202 or not start.headers.get("Location"):
                raise RegistryError(f"starting an upload to {repository} answered {start.status_code}")
            location = start.headers["Location"]
            if location.startswith("/"):
                location = f"{self.prefix}://{self.host}{location}"
            separator = "&" if "?" in location else "?"
            url = f"{location}{separator}digest={digest}"
            headers = {"Content-Type": "application/octet-stream"}
            for attempt in range(2):
                with open(path, "rb") as data:  # requests streams a file object; it is never read whole
                    response = self._send("PUT", url, repository, headers, data=data)
                # A token that expired during a long upload: renew it once, send again.
                challenge = response.headers.get("WWW-Authenticate", "")
                if response.status_code != 401 or attempt or not self.auth.answer(self.session, challenge, repository):
                    break
        if response.status_code != 201:
            raise RegistryError(f"uploading {digest} to {repository} answered {response.status_code}")

    def ensure_blob(self, repository: str, digest: str, report: PushReport, mount_from: str) -> None:
        """Make a base image's blob present in `repository`: skip it, or mount it from
        the repository it is in (never an upload: pypod does not hold its bytes)."""
        if self.has_blob(repository, digest):
            report.skipped_blobs += 1
            return
        if mount_from != repository and self._mount(repository, digest, mount_from):
            report.mounted_blobs += 1
            return
        raise RegistryError(
            f"blob {digest} is missing from {repository} and could not be mounted from {mount_from}",
            hint="the registry may not allow cross-repository mounts: push the dependency image to IMAGE_REPO",
        )

    def push_blob(self, repository: str, digest: str, path: Path, report: PushReport) -> None:
        """Upload a new blob unless `repository` has it, in one round trip fewer than HEAD
        then upload: a mount from the repository itself answers 201 when the blob is there,
        and otherwise opens the upload session."""
        with self._errors("upload a blob"):
            start = self._request("POST", f"/v2/{repository}/blobs/uploads/?mount={digest}&from={repository}")
        if start.status_code == 201:
            report.skipped_blobs += 1
            return
        self._upload(repository, path, digest, start)
        report.uploaded_blobs += 1
        report.uploaded_bytes += path.stat().st_size

    def put_manifest(self, ref: ImageRef, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        with self._errors(f"push {ref}"):
            response = self._request(
                "PUT",
                f"/v2/{ref.repository}/manifests/{ref.reference}",
                data=body,
                headers={"Content-Type": manifest.get("mediaType", OCI_MANIFEST)},
            )
        if response.status_code not in (200, 201):
            raise RegistryError(f"pushing manifest {ref} answered {response.status_code}: {response.text[:200]}")
        return response.headers.get("Docker-Content-Digest") or sha256_digest(body)


def resolve_digest(image: str) -> ImageRef:
    """`image` pinned to the digest its tag points at now; an error if it does not exist."""
    ref = ImageRef.parse(image)
    if ref.digest:  # already pinned (the dependency image is handed on this way)
        return ref
    digest = Registry(ref.registry).manifest_digest(ref)
    if digest is None:
        raise RegistryError(f"image {ref} is not in its registry", hint="push it, or choose another with --base-image")
    return ref.with_digest(digest)


def config_platform(config: dict[str, Any]) -> str:
    """Pure: os/arch[/variant] an image config says it is for ("" when it does not say)."""
    parts = [config.get("os", ""), config.get("architecture", "")]
    if not all(parts):
        return ""
    return "/".join([*parts, config["variant"]] if config.get("variant") else parts)


def platform_matches(found: str, wanted: str) -> bool:
    """Pure: same os and architecture; a variant counts only when both name one."""
    found_parts, wanted_parts = found.split("/"), wanted.split("/")
    if found_parts[:2] != wanted_parts[:2]:
        return False
    return len(found_parts) < 3 or len(wanted_parts) < 3 or found_parts[2] == wanted_parts[2]


def with_python_path(env: list[str], entry: str) -> list[str]:
    """Pure: `env` (KEY=VALUE strings) with `entry` first on PYTHONPATH, once."""
    for index, item in enumerate(env):
        key, _, value = item.partition("=")
        if key == "PYTHONPATH":
            parts = value.split(":") if value else []
            if entry in parts:
                return env
            return [*env[:index], f"PYTHONPATH={':'.join([entry, *parts])}", *env[index + 1 :]]
    return [*env, f"PYTHONPATH={entry}"]


def appended_config(
    config: dict[str, Any], layer: Layer, workdir: str, python_path: str | None = None
) -> dict[str, Any]:
    """Pure: the base image's config with one more layer, its history, and the working dir
    (and `python_path` put first on PYTHONPATH)."""
    new = copy.deepcopy(config)
    if python_path:
        settings = new.setdefault("config", {})
        settings["Env"] = with_python_path(settings.get("Env") or [], python_path)
    new.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(layer.diff_id)
    new.setdefault("history", []).append(
        {"created_by": f"pypod: source layer ({layer.files} files)", "created": "1970-01-01T00:00:00Z"}
    )
    new.setdefault("config", {})["WorkingDir"] = workdir
    return new


def appended_manifest(base: dict[str, Any], config_digest: str, config_size: int, layer: Layer) -> dict[str, Any]:
    """Pure: an OCI manifest of the base's layers plus ours, with the new config."""
    layers = [
        {
            "mediaType": TO_OCI.get(entry["mediaType"], entry["mediaType"]),
            "digest": entry["digest"],
            "size": entry["size"],
        }
        for entry in base["layers"]
    ]
    layers.append({"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size})
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    }


@dataclass(frozen=True)
class Appended:
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    report: PushReport


def append_layer(
    base: ImageRef,
    layer: Layer,
    target: ImageRef,
    workdir: str = "/workspace",
    base_image: tuple[dict[str, Any], dict[str, Any]] | None = None,
    python_path: str | None = None,
    platform: str = DEFAULT_PLATFORM,
) -> Appended:
    """Push `target` = `base` + `layer`.

    `base_image` is (manifest, config) when the caller knows them and the base is
    already in the target repository (an earlier push of the same project): then
    nothing about the base is fetched or checked again.
    """
    if base.registry != target.registry:
        raise RegistryError(
            f"the dependency image {base} and the target {target} are in different registries",
            hint="set IMAGE_REPO in the same registry as the dependency image",
        )
    registry = Registry(target.registry)
    report = PushReport()
    if base_image is None:
        _digest, manifest = registry.manifest(base, platform)
        config = registry.blob_json(base, manifest["config"]["digest"])
        found = config_platform(config)
        if found and not platform_matches(found, platform):
            raise RegistryError(
                f"the image {base} is built for {found}, not {platform}",
                hint=f"build it for {platform}, or pass --platform {found} if the cluster's nodes are {found}",
            )
        for entry in manifest["layers"]:
            registry.ensure_blob(target.repository, entry["digest"], report, mount_from=base.repository)
    else:
        manifest, config = base_image
    new_config = appended_config(config, layer, workdir, python_path)
    config_bytes = json.dumps(new_config, separators=(",", ":"), sort_keys=True).encode()
    config_digest = sha256_digest(config_bytes)
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        tmp.write(config_bytes)
        tmp.flush()
        # Layer and config go up side by side, each on its own connection and session.
        uploads = [(layer.digest, layer.path), (config_digest, Path(tmp.name))]
        reports = [PushReport() for _ in uploads]
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [
                pool.submit(Registry(target.registry).push_blob, target.repository, digest, path, part)
                for (digest, path), part in zip(uploads, reports, strict=True)
            ]
            for future in futures:
                future.result()
    for part in reports:
        report.add(part)
    new_manifest = appended_manifest(manifest, config_digest, len(config_bytes), layer)
    digest = registry.put_manifest(target, new_manifest)
    return Appended(digest, new_manifest, new_config, report)
