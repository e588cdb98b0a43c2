#!/usr/bin/env bash
# start-slapd.sh DIR PORT [LDIF ...]
#
# Creates a fresh, throw-away OpenLDAP 2.5 instance (Debian packages slapd + ldap-utils) in
# DIR and starts it in the background, bound to 127.0.0.1 only:
#   ldap://127.0.0.1:PORT           plain + StartTLS
#   ldaps://127.0.0.1:$((PORT+1))   LDAPS
# cn=config (DIR/slapd.d) is built offline with slapadd -n0; mdb backend; suffix $SUFFIX;
# syncprov (RFC 4533) on the main database; accesslog (cn=accesslog) feeding syncprov's
# session log, so delta refreshes survive restarts and deletes come as SyncInfo ID sets.
#
# Entries: the suffix, ou=people, ou=groups, ou=services and the service account
# cn=svc-sync,ou=services,$SUFFIX (read access to everything but passwords, no size/time
# limit). Every LDIF argument is bulk-loaded OFFLINE with `slapadd -q -w` before slapd starts
# (seconds for 100k entries, where ldapadd takes minutes). Base entries an LDIF already has
# (by exact DN, e.g. gen-directory.py output) are not added again; if an LDIF has the suffix
# entry, the LDIFs are loaded first and the missing base entries after them.
#
# The admin (rootdn cn=admin,$SUFFIX) can read and write everything (ldapmodify etc.).
#
# TLS: a fresh CA (DIR/tls/ca.crt) signs the server certificate (SAN IP:127.0.0.1,
# DNS:localhost and the host name); DIR/tls/other-ca.crt is a second, unrelated CA for
# "wrong CA is refused" tests. Keys are EC P-256 (fast); TLS_KEY_TYPE=rsa for RSA 2048.
#
# Writes DIR/env (sourceable: LDAP_URI, LDAPS_URI, LDAP_BASE, LDAP_ADMIN_DN/PW, LDAP_SVC_DN/PW,
# LDAPTLS_CACERT, OTHER_CA, SLAPD_PID, ...). Stop with stop-slapd.sh DIR.
#
# Environment knobs (all optional):
#   SUFFIX=dc=example,dc=com  ADMIN_PW=admin-secret  SVC_PW=svc-secret
#   ACCESSLOG=1  NOSYNC=1 (olcDbNoSync)
#   SYNCPROV=0: no syncprov overlay (a server that cannot stream RFC 4533 changes)
#   SLAPD_LOGLEVEL=none (errors only; "stats" logs every operation, "-1" everything)
#   TLS_KEY_TYPE=ec|rsa  WAIT_SECS=30  SIZE_LIMIT=500 (default limit for everyone else)
#   OWNER_PID=<pid>: stop slapd when that process is gone (a crashed or killed test run must
#                    not leave servers behind)
# Exit codes: 0 ok; 1 failure; 2 usage; 3 missing programs; 4 port already in use (pick another).
set -euo pipefail

usage() { echo "usage: start-slapd.sh DIR PORT [LDIF ...]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
DIR=$1
PORT=$2
shift 2
LDIFS=("$@")
[[ "$PORT" =~ ^[0-9]+$ ]] && (( PORT > 0 && PORT < 65535 )) || usage
SPORT=$((PORT + 1))

SUFFIX=${SUFFIX:-dc=example,dc=com}
ADMIN_PW=${ADMIN_PW:-admin-secret}
SVC_PW=${SVC_PW:-svc-secret}
SYNCPROV=${SYNCPROV:-1}
ACCESSLOG=${ACCESSLOG:-1}
# accesslog feeds syncprov's session log: without syncprov there is nothing to feed.
# Without syncprov the module is not even loaded: loading it alone advertises the
# RFC 4533 control in the root DSE.
if [[ "$SYNCPROV" = 1 ]]; then
  MORE_MODULES=$'\nolcModuleLoad: {1}syncprov\nolcModuleLoad: {2}accesslog'
else
  ACCESSLOG=0
  MORE_MODULES=""
fi
NOSYNC=${NOSYNC:-1}
SLAPD_LOGLEVEL=${SLAPD_LOGLEVEL:-none}
WAIT_SECS=${WAIT_SECS:-30}
TLS_KEY_TYPE=${TLS_KEY_TYPE:-ec}
SIZE_LIMIT=${SIZE_LIMIT:-500}
SCHEMA_DIR=${SCHEMA_DIR:-/etc/ldap/schema}
MODULE_DIR=${MODULE_DIR:-/usr/lib/ldap}

log() { printf '[start-slapd %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { local rc=${2:-1}; log "ERROR: $1"; exit "$rc"; }

# ---------------------------------------------------------------- prerequisites
find_bin() {  # name -> path (slapd & co. live in /usr/sbin, often not on a user's PATH)
  command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || true
}
SLAPD_BIN=${SLAPD_BIN:-$(find_bin slapd)}
SLAPADD_BIN=${SLAPADD_BIN:-$(find_bin slapadd)}
SLAPPASSWD_BIN=${SLAPPASSWD_BIN:-$(find_bin slappasswd)}
missing=()
[[ -n "$SLAPD_BIN" && -x "$SLAPD_BIN" ]] || missing+=(slapd)
[[ -n "$SLAPADD_BIN" && -x "$SLAPADD_BIN" ]] || missing+=(slapadd)
[[ -n "$SLAPPASSWD_BIN" && -x "$SLAPPASSWD_BIN" ]] || missing+=(slappasswd)
for b in ldapsearch openssl setsid; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
for f in core cosine nis inetorgperson; do [[ -r "$SCHEMA_DIR/$f.ldif" ]] || missing+=("$SCHEMA_DIR/$f.ldif"); done
for m in back_mdb syncprov accesslog; do [[ -e "$MODULE_DIR/$m.la" || -e "$MODULE_DIR/$m.so" ]] || missing+=("$MODULE_DIR/$m.so"); done
if (( ${#missing[@]} )); then
  die "missing: ${missing[*]}
    The LDAP tests run a real OpenLDAP server (and openssl for its certificates).
    On Debian/Ubuntu, install with: apt-get install slapd ldap-utils openssl
    (no system slapd is needed; if the package started one: service slapd stop)" 3
fi
for f in "${LDIFS[@]}"; do [[ -r "$f" ]] || die "LDIF file not readable: $f"; done

# ---------------------------------------------------------------- fresh dir, free ports
[[ "$DIR" = /* ]] || DIR="$(pwd)/$DIR"
if [[ -s "$DIR/run/slapd.pid" ]] && kill -0 "$(cat "$DIR/run/slapd.pid")" 2>/dev/null; then
  die "slapd already running for $DIR (pid $(cat "$DIR/run/slapd.pid")); run stop-slapd.sh first"
fi
for p in "$PORT" "$SPORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "127.0.0.1:$p is already in use" 4; fi
done

T0=$(date +%s%N)
secs_since() { local d=$(( $(date +%s%N) - $1 )); printf "%d.%03d" $((d/1000000000)) $(( (d/1000000) % 1000 )); }

if [[ -d "$DIR" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
  [[ -e "$DIR/.slapd-instance" ]] || die "$DIR is not empty and not a previous slapd instance dir; refusing to wipe it"
  rm -rf "${DIR:?}"/{slapd.d,data,accesslog,tls,run} "$DIR"/{config,base}.ldif "$DIR"/*.log "$DIR/env"
fi
mkdir -p "$DIR"/{slapd.d,data,accesslog,tls,run}
touch "$DIR/.slapd-instance"

ROOTDN="cn=admin,${SUFFIX}"
SVCDN="cn=svc-sync,ou=services,${SUFFIX}"
FIRST_RDN=${SUFFIX%%,*}
FIRST_TYPE=$(printf '%s' "${FIRST_RDN%%=*}" | tr '[:upper:]' '[:lower:]')
FIRST_VAL=${FIRST_RDN#*=}

# ---------------------------------------------------------------- TLS: CA, server cert, other CA
log "generating CAs + server certificate ($TLS_KEY_TYPE)"
(
  cd "$DIR/tls"
  if [[ "$TLS_KEY_TYPE" = rsa ]]; then KEYOPT=(-newkey rsa:2048); else KEYOPT=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1); fi
  mkca() {  # file-prefix subject
    openssl req -x509 -new -nodes "${KEYOPT[@]}" -sha256 -days 3650 \
        -keyout "$1.key" -out "$1.crt" -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>openssl.err \
      || { cat openssl.err >&2; exit 1; }
  }
  mkca ca "/O=Roster tests/CN=slapd test CA $$ $(date +%s%N)"
  mkca other-ca "/O=Roster tests/CN=unrelated test CA $$ $(date +%s%N)"
  openssl req -new -nodes "${KEYOPT[@]}" -sha256 \
      -keyout server.key -out server.csr -subj "/CN=localhost" 2>openssl.err \
    || { cat openssl.err >&2; exit 1; }
  # libldap checks a "localhost" URL against the machine's FQDN, so host names go in the SAN too.
  SAN="IP:127.0.0.1,DNS:localhost"
  for h in "$(uname -n)" "$(hostname -f 2>/dev/null || true)"; do
    [[ -n "$h" && "$h" != localhost && "$SAN" != *"DNS:$h"* ]] && SAN="$SAN,DNS:$h"
  done
  printf '%s\n' \
      "subjectAltName=$SAN" \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectKeyIdentifier=hash" \
      "authorityKeyIdentifier=keyid" > server.ext
  openssl x509 -req -sha256 -days 825 -in server.csr -CA ca.crt -CAkey ca.key \
      -set_serial "0x$(openssl rand -hex 8)" -out server.crt -extfile server.ext 2>openssl.err \
    || { cat openssl.err >&2; exit 1; }
  rm -f server.csr openssl.err other-ca.key   # nobody signs with the other CA
  chmod 600 ca.key server.key
) || die "certificate generation failed"

# ---------------------------------------------------------------- cn=config
hash() { "$SLAPPASSWD_BIN" -h '{SSHA}' -s "$1"; }
ADMIN_HASH=$(hash "$ADMIN_PW")
SVC_HASH=$(hash "$SVC_PW")

if [[ "$ACCESSLOG" = 1 ]]; then MAINDB=2; else MAINDB=1; fi
NOSYNC_BOOL=$([[ "$NOSYNC" = 1 ]] && echo TRUE || echo FALSE)

CONF="$DIR/config.ldif"
{
cat <<EOF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $DIR/run/slapd.pid
olcArgsFile: $DIR/run/slapd.args
olcLogLevel: none
olcToolThreads: 2
olcTLSCACertificateFile: $DIR/tls/ca.crt
olcTLSCertificateFile: $DIR/tls/server.crt
olcTLSCertificateKeyFile: $DIR/tls/server.key
olcTLSProtocolMin: 3.3

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: $MODULE_DIR
olcModuleLoad: {0}back_mdb$MORE_MODULES

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

EOF
for s in core cosine nis inetorgperson; do cat "$SCHEMA_DIR/$s.ldif"; echo; done
cat <<EOF
dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcAccess: {0}to dn.base="" by * read
olcAccess: {1}to dn.base="cn=Subschema" by * read
olcSizeLimit: $SIZE_LIMIT

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcRootDN: cn=admin,cn=config
olcRootPW: $ADMIN_HASH
olcAccess: {0}to * by * none

EOF
if [[ "$ACCESSLOG" = 1 ]]; then cat <<EOF
dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: cn=accesslog
olcRootDN: $ROOTDN
olcDbDirectory: $DIR/accesslog
olcDbMaxSize: 4294967296
olcDbNoSync: $NOSYNC_BOOL
olcDbIndex: default eq
olcDbIndex: objectClass,entryCSN,reqEnd,reqResult,reqStart,reqDN
olcLimits: {0}dn.exact="$SVCDN" size=unlimited time=unlimited
olcAccess: {0}to * by dn.exact="$ROOTDN" manage by dn.exact="$SVCDN" read by * none

dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpNoPresent: TRUE
olcSpReloadHint: TRUE

EOF
fi
cat <<EOF
dn: olcDatabase={$MAINDB}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {$MAINDB}mdb
olcSuffix: $SUFFIX
olcRootDN: $ROOTDN
olcRootPW: $ADMIN_HASH
olcDbDirectory: $DIR/data
olcDbMaxSize: 17179869184
olcDbNoSync: $NOSYNC_BOOL
olcDbIndex: objectClass eq
olcDbIndex: entryCSN,entryUUID eq
olcDbIndex: uid,mail,employeeNumber eq
olcDbIndex: cn,sn,givenName eq,sub
olcDbIndex: member,manager,owner eq
olcDbMultival: member,uniqueMember 100,10
olcLimits: {0}dn.exact="$SVCDN" size=unlimited time=unlimited
olcAccess: {0}to attrs=userPassword by dn.exact="$ROOTDN" manage by self write by anonymous auth by * none
olcAccess: {1}to * by dn.exact="$ROOTDN" manage by dn.exact="$SVCDN" read by self read by * none
EOF
if [[ "$SYNCPROV" = 1 ]]; then cat <<EOF

dn: olcOverlay={0}syncprov,olcDatabase={$MAINDB}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 100 10
EOF
fi
if [[ "$ACCESSLOG" = 1 ]]; then cat <<EOF
olcSpSessionlogSource: cn=accesslog

dn: olcOverlay={1}accesslog,olcDatabase={$MAINDB}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcAccessLogConfig
olcOverlay: {1}accesslog
olcAccessLogDB: cn=accesslog
olcAccessLogOps: writes
olcAccessLogSuccess: TRUE
olcAccessLogPurge: 07+00:00 01+00:00
EOF
elif [[ "$SYNCPROV" = 1 ]]; then cat <<EOF
olcSpSessionlog: 10000
EOF
fi
} > "$CONF"

log "slapadd -n0 (cn=config)"
"$SLAPADD_BIN" -n0 -F "$DIR/slapd.d" -l "$CONF" >"$DIR/slapadd-config.log" 2>&1 \
  || { cat "$DIR/slapadd-config.log" >&2; die "slapadd of cn=config failed"; }

# ---------------------------------------------------------------- base entries + LDIFs
# Which base DNs do the LDIFs already contain? (exact, case-insensitive match of "dn: <DN>")
lc() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }
declare -A HAVE=()
if (( ${#LDIFS[@]} )); then
  while IFS= read -r d; do HAVE["$d"]=1; done < <(
    awk -v a="$(lc "$SUFFIX")" -v b="$(lc "ou=people,$SUFFIX")" -v c="$(lc "ou=groups,$SUFFIX")" \
        -v d="$(lc "ou=services,$SUFFIX")" -v e="$(lc "$SVCDN")" '
      tolower(substr($0, 1, 3)) == "dn:" && substr($0, 4, 1) != ":" {
        v = tolower(substr($0, 4)); sub(/^ +/, "", v); sub(/ +$/, "", v)
        if (v == a || v == b || v == c || v == d || v == e) print v
      }' "${LDIFS[@]}" | sort -u)
fi
base_entry() {  # dn, body -> printed unless an LDIF has it
  if [[ -z "${HAVE[$(lc "$1")]:-}" ]]; then printf 'dn: %s\n%s\n\n' "$1" "$2"; fi
}
case "$FIRST_TYPE" in
  dc) SUFFIX_BODY=$(printf 'objectClass: dcObject\nobjectClass: organization\ndc: %s\no: %s' "$FIRST_VAL" "$FIRST_VAL") ;;
  o)  SUFFIX_BODY=$(printf 'objectClass: organization\no: %s' "$FIRST_VAL") ;;
  ou) SUFFIX_BODY=$(printf 'objectClass: organizationalUnit\nou: %s' "$FIRST_VAL") ;;
  *)  die "SUFFIX must start with dc=, o= or ou= (got $SUFFIX)" ;;
esac
{
  base_entry "$SUFFIX" "$SUFFIX_BODY"
  base_entry "ou=people,$SUFFIX" $'objectClass: organizationalUnit\nou: people'
  base_entry "ou=groups,$SUFFIX" $'objectClass: organizationalUnit\nou: groups'
  base_entry "ou=services,$SUFFIX" $'objectClass: organizationalUnit\nou: services'
  base_entry "$SVCDN" "objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: svc-sync
description: read-only sync service account
userPassword: $SVC_HASH"
} > "$DIR/base.ldif"

slapadd_file() {
  local f=$1 t; t=$(date +%s%N)
  [[ -s "$f" ]] || return 0
  "$SLAPADD_BIN" -q -w -F "$DIR/slapd.d" -b "$SUFFIX" -l "$f" >"$DIR/slapadd-data.log" 2>&1 \
    || { tail -20 "$DIR/slapadd-data.log" >&2; die "slapadd of $f failed (see above)"; }
  log "slapadd $f: $(secs_since "$t") s"
}
if [[ -n "${HAVE[$(lc "$SUFFIX")]:-}" ]]; then
  for f in "${LDIFS[@]}"; do slapadd_file "$f"; done
  slapadd_file "$DIR/base.ldif"
else
  slapadd_file "$DIR/base.ldif"
  for f in "${LDIFS[@]}"; do slapadd_file "$f"; done
fi

# ---------------------------------------------------------------- start
URLS="ldap://127.0.0.1:$PORT/ ldaps://127.0.0.1:$SPORT/"
log "starting slapd on $URLS"
# -d keeps slapd in the foreground, so start-up errors land in slapd.log instead of a
# missing syslog; setsid detaches it from this shell's session. slapd writes its pid file.
setsid "$SLAPD_BIN" -d "$SLAPD_LOGLEVEL" -s 0 -F "$DIR/slapd.d" -h "$URLS" \
  </dev/null >"$DIR/slapd.log" 2>&1 &
SLAPD_PID=$!
echo "$SLAPD_PID" > "$DIR/run/slapd.launcher.pid"
# From here on, a failure must not leave the server running.
started_ok=0
cleanup() { if [[ $started_ok = 0 ]]; then kill -KILL "$SLAPD_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

fail_start() {
  tail -30 "$DIR/slapd.log" >&2 || true
  if grep -qiE 'bind\(.*\) failed|address already in use' "$DIR/slapd.log" 2>/dev/null; then
    die "slapd could not bind 127.0.0.1:$PORT/$SPORT (port taken meanwhile)" 4
  fi
  die "$1"
}

# ---------------------------------------------------------------- wait until it answers
export LDAPTLS_CACERT="$DIR/tls/ca.crt"
deadline=$(( $(date +%s) + WAIT_SECS ))
until ldapsearch -x -H "ldap://127.0.0.1:$PORT" -ZZ -D "$ROOTDN" -w "$ADMIN_PW" \
        -b "$SUFFIX" -s base 1.1 >/dev/null 2>&1; do
  kill -0 "$SLAPD_PID" 2>/dev/null || fail_start "slapd exited during startup (log above, $DIR/slapd.log)"
  (( $(date +%s) < deadline )) || fail_start "slapd did not answer StartTLS within ${WAIT_SECS}s"
  sleep 0.03
done
until ldapsearch -x -H "ldaps://127.0.0.1:$SPORT" -b "" -s base namingContexts >/dev/null 2>&1; do
  kill -0 "$SLAPD_PID" 2>/dev/null || fail_start "slapd exited during startup (log above)"
  (( $(date +%s) < deadline )) || fail_start "ldaps did not answer within ${WAIT_SECS}s"
  sleep 0.03
done
for _ in $(seq 100); do [[ -s "$DIR/run/slapd.pid" ]] && break; sleep 0.02; done
[[ -s "$DIR/run/slapd.pid" ]] || echo "$SLAPD_PID" > "$DIR/run/slapd.pid"
PID=$(cat "$DIR/run/slapd.pid")

# ---------------------------------------------------------------- optional watchdog
if [[ -n "${OWNER_PID:-}" ]]; then
  # Polls once a second; ends by itself when slapd is gone.
  setsid bash -c '
    owner=$1 pid=$2 dir=$3
    gone() { [[ ! -r /proc/$1/stat ]] || [[ "$(sed -E "s/^.*\) ([A-Za-z]).*\$/\\1/" /proc/$1/stat 2>/dev/null)" = [ZX] ]]; }
    while ! gone "$pid"; do
      if gone "$owner"; then
        grep -qa -- "$dir/slapd.d" "/proc/$pid/cmdline" 2>/dev/null && kill -TERM "$pid"
        exit 0
      fi
      sleep 1
    done' watchdog "$OWNER_PID" "$PID" "$DIR" </dev/null >/dev/null 2>&1 &
fi

q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }   # single-quoted for sh
cat > "$DIR/env" <<EOF
# source me (written by start-slapd.sh)
LDAP_URI=ldap://127.0.0.1:$PORT
LDAPS_URI=ldaps://127.0.0.1:$SPORT
LDAP_PORT=$PORT
LDAPS_PORT=$SPORT
LDAP_BASE=$(q "$SUFFIX")
LDAP_ADMIN_DN=$(q "$ROOTDN")
LDAP_ADMIN_PW=$(q "$ADMIN_PW")
LDAP_SVC_DN=$(q "$SVCDN")
LDAP_SVC_PW=$(q "$SVC_PW")
LDAP_CONFIG_DN=cn=admin,cn=config
LDAP_CONFIG_PW=$(q "$ADMIN_PW")
LDAPTLS_CACERT=$(q "$DIR/tls/ca.crt")
OTHER_CA=$(q "$DIR/tls/other-ca.crt")
SLAPD_PID=$PID
SLAPD_DIR=$(q "$DIR")
EOF
started_ok=1
log "slapd up (pid $PID) after $(secs_since "$T0") s; details in $DIR/env"
