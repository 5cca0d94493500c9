#!/bin/sh
# A private CA and the broker's TLS certificate, with openssl.
#
#   deploy/mosquitto/make-certs.sh DIR NAME [NAME...]
#   CERT_NAME=web deploy/mosquitto/make-certs.sh DIR NAME [NAME...]
#
# NAME: every host name or IP address the nodes and services use to reach the
# broker (e.g. mqtt.park.example 10.20.0.5). Writes DIR/ca.crt, DIR/ca.key,
# DIR/broker.crt, DIR/broker.key. With CERT_NAME=web it writes DIR/web.crt and
# DIR/web.key instead, for the pages behind nginx (deploy/nginx/mamaroom.conf). Keep ca.key offline after this; ca.crt goes
# onto every node and into SSL_CERT_FILE of the services that connect over TLS.
# An existing CA in DIR is reused, so re-running renews only the broker's
# certificate (the nodes keep trusting it).
set -eu
cert=${CERT_NAME:-broker}
[ $# -ge 2 ] || { echo "usage: $0 DIR NAME [NAME...]" >&2; exit 2; }
dir=$1; shift
mkdir -p "$dir"
umask 077
san=""
for name in "$@"; do
    case $name in
        *[!0-9.]*) entry="DNS:$name" ;;
        *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done
if [ ! -f "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=mamaroom site CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
ext=$(mktemp)
trap 'rm -f "$ext" "$dir/$cert.csr"' EXIT
cat > "$ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EXT
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/$cert.key" -out "$dir/$cert.csr" -subj "/CN=$1" 2>/dev/null
# 825 days: the longest validity many TLS clients accept for a server certificate.
openssl x509 -req -in "$dir/$cert.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -out "$dir/$cert.crt" -days 825 -extfile "$ext" 2>/dev/null
chmod 644 "$dir/ca.crt" "$dir/$cert.crt"
chmod 640 "$dir/$cert.key"
echo "wrote $dir/ca.crt and $dir/$cert.crt for $san"
