#!/usr/bin/env bash
# Makes what docker-compose.yml's `secrets:` point at, in deploy/secrets/ (or $1), kept out of git:
#
#   nats/auth.conf, nats/<identity>.nk   `sluice nats-auth`: the NATS authorization include and one NKey seed per
#                                        Sluice identity (edge, agent-runner, tool-runner, subscriber, admin)
#   tls/ca.pem                           a local certificate authority for the compose stack only
#   tls/nats.pem, tls/nats-key.pem       the NATS nodes' server certificate (nats-1..3, localhost, 127.0.0.1)
#
# Running it again keeps the seeds and the CA (so running services keep working) and renews the server
# certificate; `--rotate` also makes new seeds. Needs `sluice` (make install) and openssl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/deploy/secrets}"
ROTATE="${2:-}"
SLUICE="${SLUICE:-$ROOT/.venv/bin/sluice}"
DAYS=825

umask 077
mkdir -p "$OUT/nats" "$OUT/tls"
"$SLUICE" nats-auth "$OUT/nats" ${ROTATE:+--rotate} >/dev/null
# The NATS image runs as another user than the one who made the files: the include holds public keys only.
chmod 644 "$OUT/nats/auth.conf"
# Compose bind-mounts file secrets with their host owner and mode: the seeds stay 0600 and belong to the uid the
# Sluice image runs as (10001, deploy/Dockerfile), which needs root here; otherwise say what to do.
SLUICE_UID="${SLUICE_UID:-10001}"
if ! chown "$SLUICE_UID:$SLUICE_UID" "$OUT"/nats/*.nk 2>/dev/null; then
  echo "note: could not chown the seeds to uid $SLUICE_UID (run as root, or: sudo chown $SLUICE_UID $OUT/nats/*.nk)" >&2
fi

tls="$OUT/tls"
if [[ ! -f "$tls/ca.pem" ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days "$DAYS" -subj "/CN=Sluice compose local CA" \
    -keyout "$tls/ca-key.pem" -out "$tls/ca.pem" 2>/dev/null
fi
cat >"$tls/nats.ext" <<'EXT'
subjectAltName = DNS:nats-1, DNS:nats-2, DNS:nats-3, DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
keyUsage = digitalSignature, keyEncipherment
EXT
openssl req -newkey rsa:2048 -nodes -subj "/CN=sluice-nats" -keyout "$tls/nats-key.pem" -out "$tls/nats.csr" 2>/dev/null
openssl x509 -req -in "$tls/nats.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" -CAcreateserial -days "$DAYS" \
  -extfile "$tls/nats.ext" -out "$tls/nats.pem" 2>/dev/null
rm -f "$tls/nats.csr" "$tls/nats.ext"
chmod 644 "$tls/ca.pem" "$tls/nats.pem"
# The server key is read by the NATS container's user; the CA key never leaves this directory.
chmod 644 "$tls/nats-key.pem"
echo "secrets in $OUT: NATS authorization and seeds (nats/), local CA and NATS server certificate (tls/)"
