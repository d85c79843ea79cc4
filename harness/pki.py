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

# The common name the apiserver's aggregator presents (--requestheader-allowed-names).
FRONT_PROXY_CLIENT = "front-proxy-client"
# The name the aggregator checks on the visibility API's serving certificate.
KUEUE_VISIBILITY_HOST = "visibility-server.kueue-system.svc"

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
    def front_proxy_ca_cert(self) -> Path:
        return self.folder / "front-proxy-ca.crt"

    @property
    def front_proxy_ca_key(self) -> Path:
        return self.folder / "front-proxy-ca.key"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.folder / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.folder / "front-proxy-client.key"

    @property
    def kueue_cert(self) -> Path:
        return self.folder / "kueue.crt"

    @property
    def kueue_key(self) -> Path:
        return self.folder / "kueue.key"

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
    """Create whatever of the PKI is missing under `folder`: certificates added in a later
    version of the harness are signed by the CA already there."""
    pki = Pki(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not pki.ca_cert.exists():
        _create_ca(pki)
        # Rotated with the CA: the service-account key signs tokens that pods hold.
        for path in (pki.sa_key, pki.sa_pub):
            path.unlink(missing_ok=True)
    if not pki.front_proxy_ca_cert.exists():
        _create_ca(pki, front_proxy=True)
    for leaf in _leaves(pki):
        if not leaf.cert.exists():
            _create_leaf(pki, leaf)
    if not pki.sa_pub.exists():
        # Service-account tokens are signed with RSA: every client library verifies RS256.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki.sa_key, sa_key)
        pki.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    if not pki.token_file.exists():
        lines = [f'{secrets.token_hex(24)},{name},{name},"{",".join(groups)}"' for name, groups in TOKEN_USERS.values()]
        pki.token_file.write_text("\n".join(lines) + "\n")
        pki.token_file.chmod(0o600)
    return pki


@dataclass(frozen=True)
class _Leaf:
    cert: Path
    key: Path
    subject: x509.Name
    usages: list[x509.ObjectIdentifier]
    sans: list[x509.GeneralName]
    front_proxy: bool = False  # signed by the front-proxy CA instead of the cluster CA


def _leaves(pki: Pki) -> list[_Leaf]:
    ips = [ipaddress.ip_address(a) for a in (SERVICE_IP, BRIDGE_IP, "127.0.0.1")]
    dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ]
    bridge = x509.IPAddress(ipaddress.ip_address(BRIDGE_IP))
    return [
        _Leaf(
            pki.apiserver_cert,
            pki.apiserver_key,
            _name("kube-apiserver"),
            [ExtendedKeyUsageOID.SERVER_AUTH],
            [x509.IPAddress(ip) for ip in ips] + [x509.DNSName(d) for d in dns],
        ),
        _Leaf(
            pki.kubelet_cert,
            pki.kubelet_key,
            _name(NODE_NAME),
            [ExtendedKeyUsageOID.SERVER_AUTH],
            [bridge, x509.DNSName(NODE_NAME)],
        ),
        _Leaf(
            pki.kubelet_client_cert,
            pki.kubelet_client_key,
            _name("kube-apiserver-kubelet-client", "system:masters"),
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            [],
        ),
        # The aggregation layer's client identity towards extension API servers (Kueue's
        # visibility API), which trust the front-proxy CA for it and nothing else.
        _Leaf(
            pki.front_proxy_client_cert,
            pki.front_proxy_client_key,
            _name(FRONT_PROXY_CLIENT),
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            [],
            front_proxy=True,
        ),
        # Kueue's webhooks (called by URL at the bridge IP) and its visibility API (called
        # through the kueue-system/visibility-server Service by the aggregator).
        _Leaf(
            pki.kueue_cert,
            pki.kueue_key,
            _name("kueue"),
            [ExtendedKeyUsageOID.SERVER_AUTH],
            [bridge, x509.DNSName(KUEUE_VISIBILITY_HOST)],
        ),
    ]


def _create_ca(pki: Pki, front_proxy: bool = False) -> None:
    cert_path, key_path = (
        (pki.front_proxy_ca_cert, pki.front_proxy_ca_key) if front_proxy else (pki.ca_cert, pki.ca_key)
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("pypod-harness-front-proxy-ca" if front_proxy else "pypod-harness-ca")
    cert = _sign(name, key.public_key(), key, name, is_ca=True)
    # Key first: the certificate's presence means the CA is complete.
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if not front_proxy:
        # Leaves of an older CA would not verify against the new one.
        for leaf in _leaves(pki):
            if not leaf.front_proxy:
                leaf.cert.unlink(missing_ok=True)


def _create_leaf(pki: Pki, leaf: _Leaf) -> None:
    cert_path, key_path = (
        (pki.front_proxy_ca_cert, pki.front_proxy_ca_key) if leaf.front_proxy else (pki.ca_cert, pki.ca_key)
    )
    ca_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(leaf.subject, key.public_key(), ca_key, ca_cert.subject, usages=leaf.usages, sans=leaf.sans or None)
    _write_key(leaf.key, key)
    leaf.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
