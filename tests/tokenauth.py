"""A registry token service, as the distribution token-auth spec describes and as ECR,
GHCR, Docker Hub and Harbor run one: Basic credentials (or none) in, a signed JWT that
grants the asked-for scopes out. For tests of pypod's bearer-token flow against a real
docker-registry configured with `auth: token`.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ISSUER = "pypod-test-issuer"
SERVICE = "pypod-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    account: str  # "" when anonymous
    scopes: list[str]
    granted: list[dict[str, object]]


@dataclass
class TokenService:
    """Grants every asked-for action to a known user and `anonymous_actions` to anyone."""

    users: dict[str, str]
    anonymous_actions: tuple[str, ...] = ("pull",)
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pypod test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.server: ThreadingHTTPServer | None = None

    def write_root_cert(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def token(self, account: str, access: list[dict[str, object]]) -> str:
        # x5c: docker-registry checks the signing certificate against its rootcertbundle.
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": account,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def answer(self, authorization: str, query: dict[str, list[str]]) -> tuple[int, dict[str, object]]:
        """(status, body) for one token request: pure, apart from recording it."""
        account = ""
        if authorization.lower().startswith("basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(user) != password:
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong user name or password"}]}
            account = user
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        granted = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = [a for a in actions.split(",") if account or a in self.anonymous_actions]
            granted.append({"type": kind, "name": name, "actions": allowed})
        self.requests.append(TokenRequest(account, scopes, granted))
        token = self.token(account, granted)
        return 200, {"token": token, "access_token": token, "expires_in": 300}

    def start(self) -> str:
        """Serve on a loopback port; returns the realm URL."""
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = service.answer(
                    self.headers.get("Authorization", ""), parse_qs(urlparse(self.path).query)
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
