"""Certificates and keys for the local control plane, made with the ``openssl`` command line tool.

ECDSA P-256 everywhere: generating keys is instant, and every component accepts it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_DAYS = "3650"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]

APISERVER_SANS = [
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
]

# name -> (common name, organization or None): client certificates; RBAC binds these identities.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("kubeforge-e2e-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "kwok": ("kubeforge-e2e-kwok", "system:masters"),
}


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _signed(pki: Path, name: str, subject: str, extensions: str) -> None:
    ext_file = pki / f"{name}.ext"
    ext_file.write_text(extensions)
    _openssl(
        "req",
        "-new",
        *_CURVE,
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=pki,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        _DAYS,
        "-out",
        f"{name}.crt",
        "-extfile",
        ext_file.name,
        cwd=pki,
    )
    (pki / f"{name}.csr").unlink()
    ext_file.unlink()


def generate(pki: Path) -> None:
    """Write a fresh CA, the API server's serving certificate, client certificates and the
    service-account signing key pair into ``pki``."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        *_CURVE,
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        _DAYS,
        "-subj",
        "/CN=kubeforge-e2e-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )
    _signed(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(APISERVER_SANS)}\n",
    )
    for name, (cn, org) in CLIENTS.items():
        subject = f"/CN={cn}" + (f"/O={org}" if org else "")
        _signed(
            pki,
            name,
            subject,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def serving_cert(pki: Path, name: str, sans: list[str]) -> tuple[Path, Path]:
    """A serving certificate ``<name>.crt``/``<name>.key`` for ``sans``, signed by the CA ``generate``
    wrote into ``pki``: for webhook servers the API server calls on loopback (it trusts that CA through
    the webhook configuration's ``caBundle``)."""
    _signed(
        pki,
        name,
        f"/CN={name}",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(sans)}\n",
    )
    (pki / f"{name}.key").chmod(0o600)
    return pki / f"{name}.crt", pki / f"{name}.key"
