#!/bin/sh
# The replay server's PKI, made with the openssl CLI in DIR:
#   ca.crt/ca.key            the cluster CA (trusted by clients, signs the rest)
#   server.crt/server.key    the apiserver's certificate: 127.0.0.1 and localhost
#   client.crt/client.key    a client certificate, CN=admin O=system:masters
#                            (what Magnum signs for `coe cluster config`)
#   rogue-ca.*, rogue-client.*  a client certificate from another CA (the
#                            server's authenticator answers it 401, as an apiserver)
# Usage: certs.sh DIR
set -eu
d=${1:?usage: certs.sh DIR}
mkdir -p "$d"
cd "$d"
umask 077
days=30
key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
ca() { # name subject
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "$2" -days $days -out "$1.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() { # name subject ca extfile-lines
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days $days \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "/CN=bomarun-replay-ca"
leaf server "/CN=kube-apiserver" ca "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature,keyEncipherment"
leaf client "/O=system:masters/CN=admin" ca "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
ca rogue-ca "/CN=some-other-ca"
leaf rogue-client "/O=system:masters/CN=admin" rogue-ca "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature,keyEncipherment"
chmod 644 ./*.crt
