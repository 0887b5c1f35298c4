"""Ed25519 signatures over a bundle's manifest, with the `cryptography` library.

The manifest lists every file's sha256, so a signature over its bytes vouches for every byte of
the bundle. `manifest.json.sig` holds the 64-byte signature in base64 on one line. Keys are
PEM (PKCS#8 private, SubjectPublicKeyInfo public: what `cas-sync --gen-key` writes and
`openssl genpkey -algorithm ed25519` makes) or OpenSSH (`ssh-keygen -t ed25519`); a private key
protected by a passphrase is refused (the export runs unattended).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from casconsole.errors import CasError, os_error_message

SIGNATURE_SIZE = 64


class SigningError(CasError):
    """A key that cannot be used, or a signature that does not hold; the message says which."""


def _read(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the {what}: {os_error_message(exc)}") from None
    if len(data) > 64 * 1024:
        raise SigningError(f"{path}: too large to be an Ed25519 {what}")
    return data


def load_private_key(path: Path):
    """The Ed25519 private key in `path` (PEM or OpenSSH)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read(path, "signing key")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(
            f"{path}: the key is protected by a passphrase, which an export cannot ask for"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"{path}: not a usable private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: a {type(key).__name__.removeprefix('_')} key, not Ed25519")
    return key


def load_public_key(path: Path):
    """The Ed25519 public key in `path` (PEM or an OpenSSH `ssh-ed25519 ...` line)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read(path, "trusted key")
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"{path}: not a usable public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path}: a {type(key).__name__.removeprefix('_')} key, not Ed25519")
    return key


def sign(key_path: Path, data: bytes) -> bytes:
    """The signature file's bytes for `data`: base64 of the signature and a newline."""
    signature = load_private_key(key_path).sign(data)
    return base64.b64encode(signature) + b"\n"


def verify(public_key_path: Path, data: bytes, signature_file: Path) -> None:
    """SigningError unless `signature_file` holds a signature of `data` by the key."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key_path)
    text = _read(signature_file, "signature")
    try:
        signature = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SigningError(f"{signature_file}: not a signature (expected one line of base64)") from None
    if len(signature) != SIGNATURE_SIZE:
        raise SigningError(f"{signature_file}: not an Ed25519 signature ({len(signature)} bytes, not 64)")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SigningError(
            f"{signature_file}: the signature does not match manifest.json with the trusted key "
            f"{public_key_path}: the bundle was changed, or signed with another key"
        ) from None


def generate_key(path: Path) -> Path:
    """Write a new Ed25519 key pair: `path` (private, PEM, mode 0600) and `path`.pub (public).
    Refuses to replace an existing file. Returns the public key's path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    public = path.with_name(path.name + ".pub")
    for existing in (path, public):
        if existing.exists():
            raise SigningError(f"{existing} exists already: a key is never overwritten")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
        fd = os.open(public, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(public_pem)
    except OSError as exc:
        raise SigningError(f"cannot write the key: {os_error_message(exc)}") from None
    return public
