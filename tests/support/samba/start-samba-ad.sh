#!/usr/bin/env bash
# start-samba-ad.sh DIR [LDIF ...]
#
# Provisions a throw-away Samba 4.x AD DC (Debian/Ubuntu `samba` package) with everything
# (smb.conf, private/, state/, cache, pid, sockets, logs, TLS) under DIR, then starts the
# `samba` daemon in the background listening on 127.0.0.1 ONLY.
#
# Ports: the AD DC LDAP server has NO port option - it always binds 389 (LDAP+StartTLS),
# 636 (LDAPS), 3268/3269 (GC) on every configured interface => needs root (or
# CAP_NET_BIND_SERVICE) and nothing else may hold those ports (stop a system slapd!).
#
# Env knobs (all optional):
#   REALM=EXAMPLE.TEST  DOMAIN=EXAMPLE  HOSTNAME_DC=dc1
#   ADMIN_PW='Adm1n-Secret-42'     (must satisfy AD complexity unless you relax it later)
#   SERVICES=ldap                (smb.conf "server services"; e.g. "ldap kdc" for Kerberos)
#   STRONG_AUTH=yes              ("ldap server require strong auth": yes = simple binds only
#                                 over TLS; no = allow simple binds in clear on 389)
#   BACKEND_STORE=mdb|tdb        (sam.ldb backend; default mdb = ~1.5x faster bulk adds)
#   PROCESS_MODEL=prefork|standard|single   (samba -M; default: samba's default, prefork)
#   LDB_NOSYNC=true              ("ldb:nosync": no fsync per ldb transaction; 15-20x faster
#                                 writes, as used by samba's own selftest; fine for CI)
#   LOGLEVEL=1  WAIT_SECS=120
#   REUSE=1                      (DIR already provisioned, e.g. restored from a CI cache: just start)
# Every LDIF argument is loaded after start with ONE ldapadd over the privileged ldapi socket
# (private/ldap_priv/ldapi, root-only socket: simple bind as Administrator without TLS;
# measured about as fast as ldapadd over ldaps, ~30 s for 10k users + 1k groups).
# Writes DIR/env (sourceable). Stop with stop-samba-ad.sh DIR.
#   OWNER_PID=N                  (a watchdog stops samba once process N is gone: a test run
#                                 that dies without cleaning up does not leave port 389 taken)
#   CLEANUP_DIR=PATH             (with OWNER_PID: the watchdog also removes PATH afterwards)
#
# Adapted for Roster's test harness from the measured recipe in the project's notes.
# Exit codes: 3 = programs missing, 4 = a port samba needs is taken.
set -euo pipefail

DIR=${1:?usage: start-samba-ad.sh DIR [LDIF ...]}
shift
LDIFS=("$@")
[[ "$DIR" = /* ]] || DIR="$(pwd)/$DIR"
REALM=${REALM:-EXAMPLE.TEST}
DOMAIN=${DOMAIN:-EXAMPLE}
HOSTNAME_DC=${HOSTNAME_DC:-dc1}
ADMIN_PW=${ADMIN_PW:-Adm1n-Secret-42}
SERVICES=${SERVICES:-ldap}
STRONG_AUTH=${STRONG_AUTH:-yes}
BACKEND_STORE=${BACKEND_STORE:-mdb}
LOGLEVEL=${LOGLEVEL:-1}
LDB_NOSYNC=${LDB_NOSYNC:-true}
WAIT_SECS=${WAIT_SECS:-120}
REALM_LC=$(tr '[:upper:]' '[:lower:]' <<<"$REALM")
BASE_DN=$(sed 's/^/DC=/; s/\./,DC=/g' <<<"$REALM_LC")

log() { printf '[start-samba-ad %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$(date +%s%N)
secs_since() { local d=$(( $(date +%s%N) - $1 )); printf "%d.%03d" $((d/1000000000)) $(( (d/1000000) % 1000 )); }

missing=()
for p in samba samba-tool ldapsearch ldapadd openssl; do
  command -v "$p" >/dev/null 2>&1 || [[ -x "/usr/sbin/$p" ]] || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "missing programs: ${missing[*]} (apt-get install samba samba-ad-dc samba-ad-provision ldap-utils openssl)"
  exit 3
fi
if [[ -s "$DIR/run/samba.pid" ]] && kill -0 "$(cat "$DIR/run/samba.pid")" 2>/dev/null; then
  die "samba already running for $DIR; run stop-samba-ad.sh first"
fi
for p in 389 636 3268 3269; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then log "127.0.0.1:$p is already in use (system slapd/samba running?)"; exit 4; fi
done
if [[ "${REUSE:-0}" = 1 ]]; then
  [[ -s "$DIR/etc/smb.conf" ]] || die "REUSE=1 but $DIR/etc/smb.conf is missing"
  log "REUSE=1: starting the existing provision in $DIR"
else
if [[ -d "$DIR" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
  [[ -e "$DIR/.samba-instance" ]] || die "$DIR is not empty and not a previous samba instance dir; refusing to wipe it"
  rm -rf "$DIR"
fi
mkdir -p "$DIR"/{tls,run,log}
touch "$DIR/.samba-instance"

# ------------------------------------------------------------------ TLS (SAN 127.0.0.1)
log "generating CA + server certificate"
(
  cd "$DIR/tls"
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=samba test CA $$" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -nodes -newkey rsa:2048 -sha256 -keyout server.key -out server.csr \
      -subj "/CN=$HOSTNAME_DC.$REALM_LC" 2>/dev/null
  SAN="IP:127.0.0.1,DNS:localhost,DNS:$HOSTNAME_DC.$REALM_LC,DNS:$HOSTNAME_DC"
  for h in "$(uname -n)" "$(hostname -f 2>/dev/null || true)"; do
    [[ -n "$h" && "$h" != localhost && "$SAN" != *"DNS:$h"* ]] && SAN="$SAN,DNS:$h"
  done
  printf '%s\n' "subjectAltName=$SAN" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > server.ext
  openssl x509 -req -sha256 -days 825 -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out server.crt -extfile server.ext 2>/dev/null
  chmod 600 ca.key server.key      # samba checks that the key file is 0600 and owned by it
)

# ------------------------------------------------------------------ provision
log "provisioning $REALM ($BASE_DN), backend $BACKEND_STORE"
tp=$(date +%s%N)
# -s /dev/null: do not inherit settings from /etc/samba/smb.conf into the generated smb.conf
samba-tool domain provision -s /dev/null \
  --realm="$REALM" --domain="$DOMAIN" --server-role=dc --dns-backend=NONE --use-rfc2307 \
  --adminpass="$ADMIN_PW" --targetdir="$DIR" --host-name="$HOSTNAME_DC" --host-ip=127.0.0.1 \
  --backend-store="$BACKEND_STORE" \
  --option="interfaces=127.0.0.1" --option="bind interfaces only=yes" \
  --option="server services=$SERVICES" \
  --option="ldap server require strong auth=$STRONG_AUTH" \
  --option="tls enabled=yes" --option="tls keyfile=$DIR/tls/server.key" \
  --option="tls certfile=$DIR/tls/server.crt" --option="tls cafile=$DIR/tls/ca.crt" \
  --option="pid directory=$DIR/run" --option="ncalrpc dir=$DIR/run/ncalrpc" \
  --option="winbindd socket directory=$DIR/run/winbindd" \
  --option="ntp signd socket directory=$DIR/run/ntp_signd" \
  --option="log file=$DIR/log/log.%m" --option="logging=file" \
  --option="disable netbios=yes" --option="ldb:nosync=$LDB_NOSYNC" \
  > "$DIR/provision.log" 2>&1 || { tail -30 "$DIR/provision.log" >&2; die "provision failed"; }
log "provision took $(secs_since "$tp") s"
# samba-tool silently drops --option values that are "false"/"no" from the generated smb.conf
# (e.g. "ldap server require strong auth = no"), so (re)write these two explicitly.
set_global() {  # key value : replace/insert a [global] parameter in smb.conf
  local f="$DIR/etc/smb.conf"
  awk -v k="$1" -v v="$2" '
    { l = $0; sub(/^[ \t]+/, "", l) }
    index(tolower(l), tolower(k)) == 1 && substr(l, length(k) + 1) ~ /^[ \t]*=/ { next }
    { print }
    /^\[global\]/ { print "\t" k " = " v }' "$f" > "$f.tmp" && mv "$f.tmp" "$f"
}
set_global "ldap server require strong auth" "$STRONG_AUTH"
set_global "ldb:nosync" "$LDB_NOSYNC"
fi  # REUSE

# ------------------------------------------------------------------ start
log "starting samba (services: $SERVICES)"
MODEL=()
[[ -n "${PROCESS_MODEL:-}" ]] && MODEL=(-M "$PROCESS_MODEL")
ts=$(date +%s%N)
# -F: stay in the foreground (we detach with setsid/nohup ourselves; -i would exit on stdin EOF)
setsid nohup samba -s "$DIR/etc/smb.conf" -F --no-process-group --debug-stdout -d "$LOGLEVEL" "${MODEL[@]}" \
   </dev/null >"$DIR/log/samba.out" 2>&1 &
SPID=$!
echo "$SPID" > "$DIR/run/samba.launcher.pid"

export LDAPTLS_CACERT="$DIR/tls/ca.crt"
deadline=$(( $(date +%s) + WAIT_SECS ))
until ldapsearch -x -H ldaps://127.0.0.1 -D "Administrator@$REALM_LC" -w "$ADMIN_PW" \
        -b "$BASE_DN" -s base dn >/dev/null 2>&1; do
  kill -0 "$SPID" 2>/dev/null || { tail -30 "$DIR/log/samba.out" >&2; die "samba exited during startup"; }
  (( $(date +%s) < deadline )) || { tail -30 "$DIR/log/samba.out" >&2; die "samba did not answer within ${WAIT_SECS}s"; }
  sleep 0.1
done
log "samba answered ldaps after $(secs_since "$ts") s"

LDAPI_PRIV="ldapi://$(sed 's|/|%2F|g' <<<"$DIR/private/ldap_priv/ldapi")"
for f in "${LDIFS[@]}"; do
  tl=$(date +%s%N)
  ldapadd -x -H "$LDAPI_PRIV" -D "CN=Administrator,CN=Users,$BASE_DN" -w "$ADMIN_PW" -f "$f" >"$DIR/log/ldapadd.log" 2>&1 \
    || { tail -5 "$DIR/log/ldapadd.log" >&2; die "loading $f failed"; }
  log "loaded $f ($(grep -c '^dn' "$f") entries) in $(secs_since "$tl") s"
done

if [[ -n "${OWNER_PID:-}" ]]; then
  STOP="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stop-samba-ad.sh"
  setsid bash -c '
    owner=$1 pid=$2 dir=$3 stop=$4 cleanup=$5
    gone() { [[ ! -r /proc/$1/stat ]] || [[ "$(sed -E "s/^.*\) ([A-Za-z]).*\$/\1/" /proc/$1/stat 2>/dev/null)" = [ZX] ]]; }
    while ! gone "$pid"; do
      if gone "$owner"; then
        bash "$stop" "$dir" >/dev/null 2>&1
        [[ -n "$cleanup" && -d "$cleanup" ]] && rm -rf -- "$cleanup"
        exit 0
      fi
      sleep 1
    done' watchdog "$OWNER_PID" "$SPID" "$DIR" "$STOP" "${CLEANUP_DIR:-}" </dev/null >/dev/null 2>&1 &
fi

cat > "$DIR/env" <<EOF
# source me
AD_LDAP_URI=ldap://127.0.0.1:389
AD_LDAPS_URI=ldaps://127.0.0.1:636
AD_GC_URI=ldap://127.0.0.1:3268
AD_BASE=$BASE_DN
AD_REALM=$REALM
AD_DOMAIN=$DOMAIN
AD_ADMIN_DN=CN=Administrator,CN=Users,$BASE_DN
AD_ADMIN_UPN=Administrator@$REALM_LC
AD_ADMIN_PW=$(printf %q "$ADMIN_PW")
AD_CACERT=$DIR/tls/ca.crt
AD_LDAPI_PRIV_URI=$LDAPI_PRIV
AD_SAM_LDB=$DIR/private/sam.ldb
AD_SMB_CONF=$DIR/etc/smb.conf
SAMBA_PID=$SPID
SAMBA_DIR=$DIR
EOF
log "samba AD DC up (pid $SPID) after $(secs_since "$T0") s total; details in $DIR/env"
