"""A CA and a server certificate for the stack's TLS listener (``up --mqtt-tls``).

Made once per state dir with the ``openssl`` command (Debian's ``openssl``):
``tls/ca.pem`` is what a client trusts (``mqtts://127.0.0.1:PORT?ca=<state>/tls/ca.pem``),
``tls/server.pem`` + ``tls/server.key`` (0600) what Mosquitto serves, valid for
``127.0.0.1`` and ``localhost``. ``down`` removes them with the rest of the data.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeline._procs import find_binary
from pipeline.exceptions import StartupFailed

__all__ = ["ensure_certs"]

DAYS = "825"
_SERVER_EXT = """\
subjectAltName=IP:127.0.0.1,DNS:localhost
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StartupFailed(f"openssl failed making the stack's TLS certificate: {done.stderr}")


def ensure_certs(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) in ``directory``, made when missing."""
    ca, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    if ca.exists() and cert.exists() and key.exists():
        return ca, cert, key
    openssl = find_binary("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_key, csr, ext = directory / "ca.key", directory / "server.csr", directory / "server.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run([openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
          "-days", DAYS, "-subj", "/CN=pipeswarm stack CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])  # fmt: skip
    _run([openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"])
    ext.write_text(_SERVER_EXT)
    _run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-out", str(cert), "-days", DAYS, "-extfile", str(ext)])  # fmt: skip
    for path in (ca_key, key):
        os.chmod(path, 0o600)
    csr.unlink()
    ext.unlink()
    return ca, cert, key
