"""An identity provider for tests: RSA signing keys that mint JWTs, and a real HTTPS server serving their JWKS.

- `new_signing_key()`: a key with a fresh `kid`; `.token(**claims)` signs a token for `ISSUER` / `AUDIENCE`.
- `local_tls(dir)`: a CA and a server certificate it issued for 127.0.0.1 / localhost (PEM files).
- `jwks_server(tls, *keys)`: a threaded HTTPS server on a free loopback port answering `GET /jwks.json` with the
  keys it holds now (`.serve(*keys)` swaps them, as a provider rotating its keys) and counting the fetches.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import RSAAlgorithm

__all__ = ["AUDIENCE", "ISSUER", "JwksServer", "LocalTls", "SigningKey", "jwks_server", "local_tls", "new_signing_key"]

ISSUER = "https://login.example.test/"
AUDIENCE = "sluice-tests"


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "tenant": "acme", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private, algorithm="RS256", headers={"kid": self.kid})


def new_signing_key() -> SigningKey:
    return SigningKey(uuid.uuid4().hex[:8], rsa.generate_private_key(public_exponent=65537, key_size=2048))


def jwks_document(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


# ---------------------------------------------------------------- TLS


@dataclass(frozen=True)
class LocalTls:
    ca: Path  # the CA certificate a client must trust
    cert: Path  # the server's certificate (for 127.0.0.1 and localhost)
    key: Path


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def local_tls(directory: Path) -> LocalTls:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sluice test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return LocalTls(
        ca=_pem(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        cert=_pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        key=_pem(
            directory / "server-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        ),
    )


# ---------------------------------------------------------------- the JWKS server


class JwksServer:
    def __init__(self, port: int, *keys: SigningKey) -> None:
        self.url = f"https://127.0.0.1:{port}/jwks.json"
        self.fetches = 0
        self._body = json.dumps(jwks_document(*keys)).encode()
        self._lock = threading.Lock()

    def serve(self, *keys: SigningKey) -> None:
        with self._lock:
            self._body = json.dumps(jwks_document(*keys)).encode()

    def answer(self) -> bytes:
        with self._lock:
            self.fetches += 1
            return self._body


@contextlib.contextmanager
def jwks_server(tls: LocalTls, *keys: SigningKey) -> Iterator[JwksServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    holder: list[JwksServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            body = holder[0].answer()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    holder.append(JwksServer(int(httpd.server_address[1]), *keys))
    thread = threading.Thread(target=httpd.serve_forever, name="jwks-server", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
