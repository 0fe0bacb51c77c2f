#!/usr/bin/env bash
# Makes the certificates of the audit webhook with openssl (what README "Audit: the apiserver
# side" describes):
#
#   kubetrail-ca.crt/.key            a CA that signs kubetrail's serving certificate; the
#                                    apiserver trusts it (audit-webhook.kubeconfig)
#   tls.crt/.key                     kubetrail's serving certificate for
#                                    <service>.<namespace>.svc (and .svc.cluster.local, and
#                                    every --ip)
#   client-ca.crt/.key               a CA for the apiserver's client certificate; kubetrail
#                                    trusts it (tls.client_ca_file)
#   apiserver-audit-client.crt/.key  the apiserver's client certificate
#   secret.yaml                      the Secret kubetrail-audit-tls (tls.crt, tls.key,
#                                    client-ca.crt) the receivers mount: kubectl apply -f it
#
# Usage: deploy/apiserver/make-certs.sh [--out DIR] [--namespace NS] [--service NAME]
#                                       [--ip ADDRESS]... [--days N] [--force]
# Defaults: --out ./kubetrail-audit-certs, --namespace kubetrail, --service kubetrail-audit,
# --days 365 (the CAs: 3650). Keys are EC P-256, PKCS#8, readable by their owner only.
# Existing files are kept unless --force is given. Only openssl is needed.
set -euo pipefail

out=./kubetrail-audit-certs
namespace=kubetrail
service=kubetrail-audit
days=365
force=""
ips=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --service) service="$2"; shift 2 ;;
    --ip) ips+=("$2"); shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-certs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is required" >&2; exit 1; }

mkdir -p "$out"
if [ -z "$force" ] && [ -e "$out/tls.key" ]; then
  echo "make-certs.sh: $out already holds certificates; use --force to make new ones" >&2
  exit 1
fi
umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 16)"; }

# ca NAME SUBJECT
ca() {
  key "$out/$1.key"
  openssl req -x509 -new -sha256 -key "$out/$1.key" -subj "$2" -days 3650 \
    -set_serial "$(serial)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$out/$1.crt"
}

# leaf NAME SUBJECT CA EXTENSIONS
leaf() {
  key "$out/$1.key"
  openssl req -new -sha256 -key "$out/$1.key" -subj "$2" -out "$tmp/$1.csr"
  printf '%s\n' "$4" > "$tmp/$1.ext"
  openssl x509 -req -sha256 -in "$tmp/$1.csr" -CA "$out/$3.crt" -CAkey "$out/$3.key" \
    -set_serial "$(serial)" -days "$days" -extfile "$tmp/$1.ext" -out "$out/$1.crt" 2>/dev/null
}

dns="$service.$namespace.svc"
san="DNS:$dns,DNS:$dns.cluster.local"
for ip in "${ips[@]}"; do san="$san,IP:$ip"; done

ca kubetrail-ca "/CN=kubetrail audit webhook CA"
leaf tls "/CN=$dns" kubetrail-ca "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
authorityKeyIdentifier=keyid"
ca client-ca "/CN=kubetrail audit client CA"
leaf apiserver-audit-client "/CN=kube-apiserver-audit" client-ca "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid"

openssl verify -CAfile "$out/kubetrail-ca.crt" "$out/tls.crt" >/dev/null
openssl verify -CAfile "$out/client-ca.crt" "$out/apiserver-audit-client.crt" >/dev/null

b64() { openssl base64 -A -in "$1"; }
cat > "$out/secret.yaml" <<YAML
# The audit receivers' serving certificate and client CA (deploy/components/audit).
apiVersion: v1
kind: Secret
metadata:
  name: kubetrail-audit-tls
  namespace: $namespace
  labels:
    app.kubernetes.io/name: kubetrail
    app.kubernetes.io/component: audit
type: Opaque
data:
  tls.crt: $(b64 "$out/tls.crt")
  tls.key: $(b64 "$out/tls.key")
  client-ca.crt: $(b64 "$out/client-ca.crt")
YAML
chmod 644 "$out"/*.crt

cat >&2 <<EOF
make-certs.sh: certificates for $dns in $out (valid $days days).
Next:
  kubectl apply -f $out/secret.yaml
  copy to /etc/kubernetes/audit/ on every control-plane node: $out/kubetrail-ca.crt,
    $out/apiserver-audit-client.crt, $out/apiserver-audit-client.key, and
    deploy/apiserver/audit-webhook.kubeconfig and deploy/apiserver/audit-policy.yaml
  keep $out/kubetrail-ca.key and $out/client-ca.key offline: they sign new certificates.
EOF
