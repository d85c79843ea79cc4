"""The cluster's own certificate authority, serving certificates, keys and tokens.

Generated once per state folder and reused by later `harness up`s, so kubeconfigs
handed out earlier stay valid.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .layout import BRIDGE_IP, NODE_NAME, SERVICE_IP

VALID_FOR = datetime.timedelta(days=3650)

# Static-token users: name, uid, groups. Components get their well-known identities,
# which the default RBAC bootstrap policy already binds.
TOKEN_USERS = {
    "admin": ("admin", ["system:masters"]),
    "restricted": ("pypod-restricted", ["pypod:restricted"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    "kubelet": (f"system:node:{NODE_NAME}", ["system:nodes"]),
    "kube-proxy": ("system:kube-proxy", []),
}


@dataclass(frozen=True)
class Pki:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.folder / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.folder / "apiserver.key"

    @property
    def kubelet_cert(self) -> Path:
        return self.folder / "kubelet.crt"

    @property
    def kubelet_key(self) -> Path:
        return self.folder / "kubelet.key"

    @property
    def kubelet_client_cert(self) -> Path:
        return self.folder / "apiserver-kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.folder / "apiserver-kubelet-client.key"

    @property
    def sa_key(self) -> Path:
        return self.folder / "service-account.key"

    @property
    def sa_pub(self) -> Path:
        return self.folder / "service-account.pub"

    @property
    def token_file(self) -> Path:
        return self.folder / "tokens.csv"

    def tokens(self) -> dict[str, str]:
        """Role name (a key of TOKEN_USERS) to bearer token."""
        result: dict[str, str] = {}
        for line in self.token_file.read_text().splitlines():
            token, user, _uid = line.split(",")[:3]
            for role, (name, _groups) in TOKEN_USERS.items():
                if name == user:
                    result[role] = token
        return result


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sign(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    is_ca: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def ensure_pki(folder: Path) -> Pki:
    """Create whatever of the PKI is missing under `folder`."""
    pki = Pki(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not pki.ca_cert.exists():
        _create_all(pki)
    if not pki.token_file.exists():
        lines = [f'{secrets.token_hex(24)},{name},{name},"{",".join(groups)}"' for name, groups in TOKEN_USERS.values()]
        pki.token_file.write_text("\n".join(lines) + "\n")
        pki.token_file.chmod(0o600)
    return pki


def _create_all(pki: Pki) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("pypod-harness-ca")
    ca_cert = _sign(ca_name, ca_key.public_key(), ca_key, ca_name, is_ca=True)

    def leaf(cert_path: Path, key_path: Path, subject: x509.Name, usages: list, sans: list | None = None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(subject, key.public_key(), ca_key, ca_name, usages=usages, sans=sans)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ips = [ipaddress.ip_address(a) for a in (SERVICE_IP, BRIDGE_IP, "127.0.0.1")]
    dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ]
    leaf(
        pki.apiserver_cert,
        pki.apiserver_key,
        _name("kube-apiserver"),
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [x509.IPAddress(ip) for ip in ips] + [x509.DNSName(d) for d in dns],
    )
    leaf(
        pki.kubelet_cert,
        pki.kubelet_key,
        _name(NODE_NAME),
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [x509.IPAddress(ipaddress.ip_address(BRIDGE_IP)), x509.DNSName(NODE_NAME)],
    )
    leaf(
        pki.kubelet_client_cert,
        pki.kubelet_client_key,
        _name("kube-apiserver-kubelet-client", "system:masters"),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    # Service-account tokens are signed with RSA: every client library verifies RS256.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _write_key(pki.ca_key, ca_key)
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
