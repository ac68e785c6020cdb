#!/usr/bin/env bash
# A local CA and a server certificate for trying sluice's TLS listener
# (docs/tls.md), with the openssl CLI only. Not for production: use a real CA.
#
#   firmware-config/make-test-cert.sh DIR [NAME] [SANS] [OCSP_URL] [KEYTYPE]
#
#   DIR       where everything goes; a CA already there is reused, so
#             several server certificates can share one CA
#   NAME      file prefix of the server certificate (default: server)
#   SANS      subjectAltName list (default: DNS:localhost,IP:127.0.0.1)
#   OCSP_URL  responder named in the certificate (authorityInfoAccess),
#             e.g. http://127.0.0.1:8888; default: none
#   KEYTYPE   ec (P-256, default) or rsa (2048 bits)
#
# Makes DIR/ca.crt (the root clients trust: curl --cacert DIR/ca.crt),
# DIR/intermediate.{crt,key} (issues the server certificates and signs OCSP
# answers), DIR/NAME.crt, DIR/NAME-chain.pem (certificate + intermediate:
# the [cert.X] chain) and DIR/NAME.key (mode 0600: the [cert.X] key), and
# DIR/index.txt (the intermediate's database for `openssl ocsp -index`).
set -euo pipefail

dir="${1:?usage: make-test-cert.sh DIR [NAME] [SANS] [OCSP_URL] [KEYTYPE]}"
name="${2:-server}"
sans="${3:-DNS:localhost,IP:127.0.0.1}"
ocsp="${4:-}"
keytype="${5:-ec}"
days=825

mkdir -p "$dir"
cd "$dir"
umask 077

newkey() {
	if [ "$keytype" = rsa ]; then
		openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"
	else
		openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
	fi
}

if [ ! -s ca.crt ] || [ ! -s intermediate.crt ]; then
	newkey ca.key
	openssl req -new -x509 -key ca.key -out ca.crt -days 3650 -subj "/CN=sluice test root CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
	newkey intermediate.key
	openssl req -new -key intermediate.key -out intermediate.csr -subj "/CN=sluice test intermediate CA"
	# The issuer signs its own OCSP answers, which needs no extendedKeyUsage
	# (one here would restrict every certificate below it).
	printf '%s\n' "basicConstraints=critical,CA:TRUE,pathlen:0" \
		"keyUsage=critical,keyCertSign,cRLSign,digitalSignature" >intermediate.ext
	openssl x509 -req -in intermediate.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
		-out intermediate.crt -days 3650 -extfile intermediate.ext 2>/dev/null
	rm -f intermediate.csr intermediate.ext
	: >index.txt
fi

newkey "$name.key"
openssl req -new -key "$name.key" -out "$name.csr" -subj "/CN=${name}"
{
	echo "basicConstraints=critical,CA:FALSE"
	echo "keyUsage=critical,digitalSignature,keyEncipherment"
	echo "extendedKeyUsage=serverAuth"
	echo "subjectAltName=$sans"
	if [ -n "$ocsp" ]; then echo "authorityInfoAccess=OCSP;URI:$ocsp"; fi
} >"$name.ext"
serial="$(openssl rand -hex 16)"
openssl x509 -req -in "$name.csr" -CA intermediate.crt -CAkey intermediate.key -set_serial "0x$serial" \
	-out "$name.crt" -days "$days" -extfile "$name.ext" 2>/dev/null
rm -f "$name.csr" "$name.ext"
cat "$name.crt" intermediate.crt >"$name-chain.pem"
chmod 600 "$name.key"
chmod 644 ca.crt intermediate.crt "$name.crt" "$name-chain.pem"

# One valid entry per certificate for `openssl ocsp -index index.txt`.
subject="$(openssl x509 -in "$name.crt" -noout -subject -nameopt compat | sed 's/^subject=//')"
enddate="$(openssl x509 -in "$name.crt" -noout -enddate | sed 's/^notAfter=//')"
printf 'V\t%s\t\t%s\tunknown\t%s\n' "$(date -u -d "$enddate" +%y%m%d%H%M%SZ)" \
	"$(echo "$serial" | tr a-f A-F)" "$subject" >>index.txt
echo "$dir/$name-chain.pem and $dir/$name.key (CA: $dir/ca.crt)"
