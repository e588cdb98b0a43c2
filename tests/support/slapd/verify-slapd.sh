#!/usr/bin/env bash
# verify-slapd.sh DIR -- functional checks against an instance made by start-slapd.sh:
# binds (plain, StartTLS, LDAPS, localhost SAN), TLS verification (the other CA is refused),
# ACLs, admin writes, paged results, RFC 4533 refreshOnly / refreshAndPersist, accesslog.
# Prints PASS/FAIL lines; exit status 1 if anything failed.
set -uo pipefail
DIR=${1:?usage: verify-slapd.sh DIR}
# shellcheck disable=SC1091
source "$DIR/env"
export LDAPTLS_CACERT
fail=0
ok()  { printf 'PASS  %s\n' "$*"; }
bad() { printf 'FAIL  %s\n' "$*"; fail=1; }
chk() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi; }
SVC=(-x -D "$LDAP_SVC_DN" -w "$LDAP_SVC_PW")
ADM=(-x -D "$LDAP_ADMIN_DN" -w "$LDAP_ADMIN_PW")

chk "plain simple bind (admin) on $LDAP_URI"      ldapwhoami -H "$LDAP_URI" "${ADM[@]}"
chk "StartTLS (-ZZ) bind (svc), CA verified"     ldapwhoami -H "$LDAP_URI" -ZZ "${SVC[@]}"
chk "ldaps bind (svc) on $LDAPS_URI"             ldapwhoami -H "$LDAPS_URI" "${SVC[@]}"
chk "ldaps via ldaps://localhost (SAN/hostname)" ldapwhoami -H "${LDAPS_URI/127.0.0.1/localhost}" "${SVC[@]}"
if LDAPTLS_CACERT="$OTHER_CA" ldapwhoami -H "$LDAPS_URI" "${SVC[@]}" >/dev/null 2>&1; then
  bad "ldaps with the other CA must fail"; else ok "ldaps with the other CA is refused"; fi
if LDAPTLS_CACERT="$OTHER_CA" ldapwhoami -H "$LDAP_URI" -ZZ "${SVC[@]}" >/dev/null 2>&1; then
  bad "StartTLS with the other CA must fail"; else ok "StartTLS with the other CA is refused"; fi
if ldapwhoami -H "$LDAP_URI" -x -D "$LDAP_SVC_DN" -w wrong >/dev/null 2>&1; then
  bad "wrong password must fail"; else ok "wrong password refused (49)"; fi

n=$(ldapsearch -H "$LDAP_URI" -ZZ "${SVC[@]}" -b "$LDAP_BASE" -E pr=1000/noprompt '(objectClass=inetOrgPerson)' 1.1 | grep -c '^dn:')
ok "svc reads users with paged results (pr=1000): $n entries"
pw=$(ldapsearch -H "$LDAP_URI" "${SVC[@]}" -b "ou=people,$LDAP_BASE" -E pr=1000/noprompt '(userPassword=*)' userPassword | grep -c '^userPassword')
[[ $pw -eq 0 ]] && ok "svc cannot read users' userPassword" || bad "svc can read userPassword ($pw)"
anon=$(ldapsearch -H "$LDAP_URI" -x -b "$LDAP_BASE" '(objectClass=*)' 1.1 2>/dev/null | grep -c '^dn:')
[[ $anon -eq 0 ]] && ok "anonymous cannot read the tree" || bad "anonymous read $anon entries"
chk "root DSE readable anonymously"                ldapsearch -H "$LDAP_URI" -x -b "" -s base namingContexts

out=$(ldapsearch -H "$LDAP_URI" "${SVC[@]}" -b "$LDAP_BASE" -E sync=ro '(objectClass=organizationalUnit)' 1.1)
cookie=$(sed -n 's/^# cookie: //p' <<<"$out" | tail -1)
[[ -n "$cookie" ]] && ok "sync=ro (refreshOnly) returns a cookie: $cookie" || bad "sync=ro cookie"

tmp=$(mktemp)
timeout 5 stdbuf -oL ldapsearch -H "$LDAP_URI" "${SVC[@]}" -b "$LDAP_BASE" -o ldif-wrap=no \
    -E "sync=rp/$cookie" '(objectClass=organizationalUnit)' description >"$tmp" 2>&1 &
bg=$!
for _ in $(seq 100); do grep -q 'persist stage' "$tmp" && break; sleep 0.05; done
stamp="verify $(date +%s%N)"
if printf 'dn: ou=services,%s\nchangetype: modify\nreplace: description\ndescription: %s\n' "$LDAP_BASE" "$stamp" \
    | ldapmodify -H "$LDAP_URI" -ZZ "${ADM[@]}" >/dev/null; then ok "admin can write (ldapmodify over StartTLS)"; else bad "admin write"; fi
for _ in $(seq 100); do grep -q "$stamp" "$tmp" && break; sleep 0.05; done
if grep -q "$stamp" "$tmp"; then ok "sync=rp (refreshAndPersist) delivered a live modify"; else bad "sync=rp did not deliver"; cat "$tmp"; fi
kill "$bg" 2>/dev/null; wait "$bg" 2>/dev/null; rm -f "$tmp"

if ldapsearch -H "$LDAP_URI" "${SVC[@]}" -b cn=accesslog -s one '(reqType=modify)' reqDN 2>/dev/null | grep -q '^reqDN'; then
  ok "accesslog (cn=accesslog) readable by svc"; else echo "INFO  no accesslog (ACCESSLOG=0?)"; fi
exit $fail
