#!/usr/bin/env python3
"""gen-directory.py - deterministic synthetic directory (RFC 2849 LDIF) for Roster's tests.

Stdlib only. Same arguments => byte-identical output (the seed drives everything).

  gen-directory.py --users 300 --groups 40 --seed 42 --suffix dc=example,dc=com \\
                   --with-uuid --out examples/directory.ldif

What it writes (OpenLDAP flavour: inetOrgPerson users, groupOfNames groups):
  * the tree: the suffix entry (dcObject+organization), ou=people, ou=groups (leave these
    three out with --no-base) and the sub-OUs used for scope tests:
      ou=engineering,ou=people   ou=interns,ou=engineering,ou=people
      ou=sales,ou=people         ou=contractors,ou=people
      ou=teams,ou=groups         ou=distribution,ou=groups
    Parents always come before children, so `slapadd` and `ldapadd` both accept the file.
  * N users (inetOrgPerson: uid, cn, sn, givenName, displayName, mail, employeeNumber, title,
    departmentNumber, manager; a few userPassword). Users 1..len(EDGE_USERS) are fixed edge
    cases directly under ou=people (see --list-edge-cases): DNs that need escaping (',' '+'
    '"' '<>' ';' '\\' a leading '#', a leading and a trailing space, '='), a multi-valued RDN,
    non-ASCII and non-BMP DNs. Others are spread over ou=people and its sub-OUs. Some users
    have no displayName, no mail, two mails, or a mixed-case uid/mail.
  * M groups (groupOfNames, `member` DNs): heavy-tailed (Pareto) sizes plus up to three big
    groups (all users, 1/2, 1/4); edge-case names (',' '+' '#' non-ASCII CJK, filter
    metacharacters); a nesting chain of depth 5 (nest-chain-k contains nest-chain-(k-1)); a
    3-cycle (nest-cycle-a -> b -> c -> a); ~10 % of ordinary groups contain 1-3 earlier groups;
    one member value written in a different but equivalent DN spelling (hex escapes, other
    case); one dangling member (a DN that does not exist).
  * --with-uuid: an explicit entryUUID on every entry: uuid5(ROSTER_NS, "user:" + uid) for
    users, uuid5(ROSTER_NS, "group:" + cn) for groups and uuid5(ROSTER_NS, "dn:" + dn) for the
    suffix and OUs. slapadd keeps them (without it, slapadd generates random ones); ldapadd
    refuses them (entryUUID is NO-USER-MODIFICATION), so leave it off for online adds.

Encoding: values that are not plain ASCII, or start with ' ', ':' or '<', or end with ' ',
or contain CR/LF/NUL, are base64 (`attr:: ...`), as are such DNs (`dn:: ...`). Lines longer
than 76 characters are folded (RFC 2849 continuation lines) in the edge-case entries and in
about one entry in ten, so readers must handle both folded and unfolded long lines.
"""
import argparse
import base64
import hashlib
import random
import re
import sys
import unicodedata
import uuid

# Fixed namespace for deterministic entryUUIDs. Do not change: tests and examples/ rely on it.
ROSTER_NS = uuid.UUID("6f1b2c1e-8a53-5b7e-9c4d-2e0f6a7b8c9d")

ASCII_GIVEN = ["James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
               "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
               "Thomas", "Sarah", "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa",
               "Anthony", "Betty", "Mark", "Sandra", "Paul", "Ashley", "Steven", "Emily", "Kevin",
               "Donna", "Brian", "Michelle", "George", "Carol", "Edward", "Amanda", "Ronald",
               "Melissa", "Timothy", "Deborah", "Jason", "Stephanie", "Jeffrey", "Rebecca", "Ryan",
               "Laura", "Jacob", "Sharon", "Gary", "Cynthia", "Nicholas", "Kathleen", "Eric", "Amy"]
ASCII_SN = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
            "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
            "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
            "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young",
            "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
            "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter",
            "O'Brien", "Smith-Jones", "van der Berg", "McDonald", "D'Angelo"]
LATIN_GIVEN = ["José", "Zoë", "François", "Søren", "Ólafur", "Łukasz", "Đorđe", "Jürgen",
               "Anaïs", "Björn", "Çağla", "Ñuño", "Renée", "Siân", "Ōta", "Kryštof", "Małgorzata"]
LATIN_SN = ["Müller", "Ångström", "Løwe", "Gómez", "Nuñez", "Šťastný", "Dvořák", "Øre", "Brontë",
            "Çelik", "Großmann", "Le Bœuf", "Jørgensen", "Wałęsa", "Ibáñez", "Fraïssé",
            "Ærøskøbing"]
CJK = [("山田", "太郎"), ("李", "雷"), ("韩", "梅梅"), ("王", "芳"), ("张", "伟"), ("田中", "花子"),
       ("佐藤", "健"), ("김", "민준"), ("이", "서연")]          # (family, given)
OTHER = [("Иван", "Петров"), ("Анна", "Смирнова"), ("Γιώργος", "Παπαδόπουλος"),
         ("محمد", "العلي"), ("דוד", "כהן"), ("अर्जुन", "शर्मा"), ("Nguyễn", "Thị Minh")]
TITLES = ["Engineer", "Senior Engineer", "Staff Engineer", "Manager", "Director", "Analyst",
          "Sales Representative", "Account Executive", "Designer", "Product Manager", "Intern",
          "Accountant", "Recruiter", "Support Specialist", "Researcher", "Chief Ingénieur"]
DEPTS = ["D-%04d" % i for i in range(1, 61)]
GROUP_WORDS = ["alpha", "bravo", "delta", "falcon", "harbor", "juniper", "kepler", "lotus",
               "meridian", "nimbus", "orion", "pioneer", "quartz", "raven", "sierra", "tundra"]

# (sub-OU path relative to the people/groups container, weight)
USER_OUS = [("", 55), ("ou=engineering", 15), ("ou=interns,ou=engineering", 5),
            ("ou=sales", 15), ("ou=contractors", 10)]
GROUP_OUS = [("", 70), ("ou=teams", 20), ("ou=distribution", 10)]

# Edge-case users: (given, sn, cn, rdn mode, note); rdn mode: uid | cn | multi (cn+uid).
EDGE_USERS = [
    ("José", "Müller", "José Müller", "uid", "non-ASCII attribute values, ASCII DN"),
    ("José", "Müller", "Müller, José", "cn", "comma in RDN value, non-ASCII DN"),
    ("太郎", "山田", "山田太郎", "cn", "CJK DN"),
    ("Łukasz", "Ærøskøbing", "Łukasz Ærøskøbing", "cn", "Latin Extended DN"),
    ("Service", "R+D", "R+D Service", "cn", "plus in RDN value"),
    ("Jane", "Plus", "Jane Plus", "multi", "multi-valued RDN cn+uid"),
    ("Quote", "Semi", 'Dr. "Quote" <Semi>; Colon', "cn", 'quote, <>, ; in RDN'),
    ("Back", "Slash", "Back\\Slash", "cn", "backslash in RDN"),
    ("Hash", "Tag", "#hashtag", "cn", "leading # in RDN"),
    ("Trail", "Space", "Trailing Space ", "cn", "trailing space in RDN (value base64 in LDIF)"),
    ("Lead", "Space", " Leading Space", "cn", "leading space in RDN (value base64 in LDIF)"),
    ("Eq", "Uals", "a=b Equals", "cn", "= in RDN"),
    ("😀", "Smiley", "Smiley 😀", "cn", "emoji (non-BMP) in DN"),
    ("Star", "Paren", "Star*Paren (Test)", "cn", "LDAP filter metacharacters * ( ) in DN"),
    ("Иван", "Петров", "Иван Петров", "cn", "Cyrillic DN"),
]
# Edge-case groups (directly under ou=groups).
EDGE_GROUPS = ["Sales, EMEA", "R+D", "#ops", "Ünïcödé Grüppe", "研发部", "Star*Group (ops)"]
LARGE_GROUPS = ["all-staff", "big-division", "big-region"]   # n, n/2, n/4 members
CHAIN_LEN = 5
CYCLE = ["nest-cycle-a", "nest-cycle-b", "nest-cycle-c"]
SPECIAL_GROUPS = ["dn-spelling", "dangling-ref"]

LONG_TEXT = ("This description is deliberately longer than seventy-six characters so that "
             "LDIF writers fold it onto continuation lines; readers must join them again.")


# ----------------------------------------------------------------------------- LDIF helpers
def dn_escape(v):
    """RFC 4514 attribute value escaping (also escapes '=', which is allowed)."""
    out = []
    for i, ch in enumerate(v):
        if ch in ',+"\\<>;=':
            out.append("\\" + ch)
        elif ch == "\0":
            out.append("\\00")
        elif (i == 0 and ch in "# ") or (i == len(v) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def dn_hex_escape(v):
    """Another valid RFC 4514 spelling of the same value: every special and non-ASCII byte
    as a \\XX hex pair (what OpenLDAP itself returns for some characters)."""
    out = []
    for i, ch in enumerate(v):
        if ch in ',+"\\<>;=#' or not ch.isascii() or (ch == " " and (i == 0 or i == len(v) - 1)):
            out.append("".join("\\%02X" % b for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


# RFC 2849: SAFE-INIT-CHAR excludes NUL, LF, CR, space, ':' and '<'; SAFE-CHAR excludes NUL,
# LF, CR; non-ASCII needs base64; a trailing space would be lost by readers, so base64 it too.
_UNSAFE = re.compile(r"^[ :<]|[^\x01-\x09\x0b\x0c\x0e-\x7f]| \Z")


def needs_base64(value):
    return _UNSAFE.search(value) is not None


def ldif_line(attr, value):
    if isinstance(value, bytes):
        return "%s:: %s" % (attr, base64.b64encode(value).decode())
    if value != "" and needs_base64(value):
        return "%s:: %s" % (attr, base64.b64encode(value.encode("utf-8")).decode())
    return "%s: %s" % (attr, value)


def fold(line, width=76):
    """RFC 2849 folding: continuation lines start with one space. All lines we write are
    ASCII (anything else is base64), so cutting at any character is safe."""
    if len(line) <= width:
        return [line]
    parts = [line[:width]]
    rest = line[width:]
    while rest:
        parts.append(" " + rest[:width - 1])
        rest = rest[width - 1:]
    return parts


def ascii_fold(s):
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if c.isascii() and c.isalnum()).lower()


def ssha(password, rng):
    salt = bytes(rng.getrandbits(8) for _ in range(8))
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


# ----------------------------------------------------------------------------- generator
class Gen:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        s = a.suffix
        self.people = "ou=people," + s
        self.groups = "ou=groups," + s
        dcs = [p.split("=", 1)[1] for p in s.split(",") if p.strip().lower().startswith("dc=")]
        self.domain = a.mail_domain or ".".join(dcs) or "example.com"
        self.users = []        # DNs, in order
        self.user_rdn = []     # (rdn type, raw rdn value, container) per user; None for multi-valued
        self.uuid_key = None
        self.groups_dn = []
        self.stats = {"users": 0, "groups": 0, "ous": 0, "nested_edges": 0, "member_values": 0,
                      "base64_lines": 0, "folded_lines": 0, "users_by_ou": {}}

    def out_entry(self, out, dn, attrs, fold_long=False):
        lines = [ldif_line("dn", dn)]
        if self.a.with_uuid and self.uuid_key is not None:
            attrs = attrs + [("entryUUID", str(uuid.uuid5(ROSTER_NS, self.uuid_key)))]
        for k, vals in attrs:
            if vals is None:
                continue
            if isinstance(vals, (str, bytes)):
                vals = [vals]
            for v in vals:
                lines.append(ldif_line(k, v))
        for line in lines:
            if "::" in line.split(" ", 1)[0]:
                self.stats["base64_lines"] += 1
            parts = fold(line) if fold_long else [line]
            if len(parts) > 1:
                self.stats["folded_lines"] += 1
            for p in parts:
                out.write(p + "\n")
        out.write("\n")

    def pick_weighted(self, items):
        tot = sum(w for _, w in items)
        r = self.rng.uniform(0, tot)
        for v, w in items:
            r -= w
            if r <= 0:
                return v
        return items[-1][0]

    def container(self, rel, base):
        return rel + "," + base if rel else base

    def random_name(self):
        r = self.rng.random()
        if r < 0.70:
            g, s = self.rng.choice(ASCII_GIVEN), self.rng.choice(ASCII_SN)
            return g, s, "%s %s" % (g, s)
        if r < 0.90:
            g = self.rng.choice(LATIN_GIVEN + ASCII_GIVEN[:10])
            s = self.rng.choice(LATIN_SN)
            return g, s, "%s %s" % (g, s)
        if r < 0.95:
            s, g = self.rng.choice(CJK)
            return g, s, s + g
        g, s = self.rng.choice(OTHER)
        return g, s, "%s %s" % (g, s)

    # ------------------------------------------------------------------ tree
    def emit_ous(self, out):
        s = self.a.suffix
        if not self.a.no_base:
            first_rdn = s.split(",", 1)[0]
            typ, val = first_rdn.split("=", 1)
            self.uuid_key = "dn:" + s.lower()
            if typ.strip().lower() == "dc":
                attrs = [("objectClass", ["top", "dcObject", "organization"]), ("dc", val), ("o", val)]
            else:   # o=..., ou=...: a plain organization / organizationalUnit
                oc = "organization" if typ.strip().lower() == "o" else "organizationalUnit"
                attrs = [("objectClass", ["top", oc]), (typ.strip(), val)]
            self.out_entry(out, s, attrs)
            self.stats["ous"] += 1
            for c in (self.people, self.groups):
                self.uuid_key = "dn:" + c.lower()
                self.out_entry(out, c, [("objectClass", ["top", "organizationalUnit"]),
                                        ("ou", c.split(",", 1)[0].split("=", 1)[1])])
                self.stats["ous"] += 1
        for rels, base in ((USER_OUS, self.people), (GROUP_OUS, self.groups)):
            for rel, _ in rels:
                if not rel:
                    continue
                dn = self.container(rel, base)
                self.uuid_key = "dn:" + dn.lower()
                self.out_entry(out, dn, [("objectClass", ["top", "organizationalUnit"]),
                                         ("ou", rel.split(",", 1)[0].split("=", 1)[1]),
                                         ("description", "scope test OU")])
                self.stats["ous"] += 1

    # ------------------------------------------------------------------ users
    def emit_users(self, out):
        a = self.a
        n = a.users
        edges = EDGE_USERS if n >= 50 else []
        used_cn = set()
        for i in range(n):
            note = None
            if 1 <= i <= len(edges):
                given, sn, cn, mode, note = edges[i - 1]
                container = self.people
            else:
                given, sn, cn = self.random_name()
                mode = "uid"
                container = self.container(self.pick_weighted(USER_OUS), self.people)
            uid = "%s%d" % ((ascii_fold(given)[:1] + ascii_fold(sn)[:10]) or "u", i)
            if mode == "uid":
                rdn = "uid=" + dn_escape(uid)
            elif mode == "cn":
                key = (unicodedata.normalize("NFKC", cn).casefold(), container.lower())
                if key in used_cn:
                    cn = "%s %d" % (cn, i)
                used_cn.add(key)
                rdn = "cn=" + dn_escape(cn)
            else:
                rdn = "cn=%s+uid=%s" % (dn_escape(cn), dn_escape(uid))
            dn = rdn + "," + container
            self.users.append(dn)
            self.user_rdn.append(None if mode == "multi" else
                                 (mode, uid if mode == "uid" else cn, container))
            rel = container[:-len(self.people)].rstrip(",") or "(ou=people)"
            self.stats["users_by_ou"][rel] = self.stats["users_by_ou"].get(rel, 0) + 1

            # a few mixed-case uids / mails (lower() in mappings must matter)
            r_case = self.rng.random()
            shown_uid = uid[:1].upper() + uid[1:] if r_case < 0.05 else uid
            attrs = [("objectClass", ["top", "person", "organizationalPerson", "inetOrgPerson"]),
                     ("cn", cn), ("uid", shown_uid), ("givenName", given), ("sn", sn)]
            if self.rng.random() >= 0.03 or note:
                attrs.append(("displayName", "%s %s" % (given, sn)))
            r = self.rng.random()
            mail = "%s@%s" % (uid, self.domain)
            if r_case < 0.05:
                mail = mail[:1].upper() + mail[1:]
            if r < 0.02 and not note:
                pass                                                   # no mail at all
            elif r < 0.04:
                attrs.append(("mail", [mail, "%s@alt.%s" % (uid, self.domain)]))
            else:
                attrs.append(("mail", mail))
            attrs += [("title", self.rng.choice(TITLES)),
                      ("departmentNumber", self.rng.choice(DEPTS)),
                      ("employeeNumber", str(100000 + i))]
            if i > 0:
                attrs.append(("manager", self.users[(i - 1) // a.fanout]))
            fold_long = note is not None or self.rng.random() < 0.1
            r = self.rng.random()
            if note:
                attrs.append(("description", "edge-case: " + note))
            elif r < 0.01:
                attrs.append(("description", "multi-line\ndescription with trailing space "))
            elif r < 0.02:
                attrs.append(("description", ":-) starts with a colon"))
            elif r < 0.03:
                attrs.append(("description", "<not a URL> starts with '<'"))
            elif r < 0.08:
                attrs.append(("description", LONG_TEXT))
            if i < a.passwords:
                attrs.append(("userPassword", ssha(a.password, self.rng)))
            self.uuid_key = "user:" + uid
            self.out_entry(out, dn, attrs, fold_long)
            self.stats["users"] += 1

    # ------------------------------------------------------------------ groups
    def group_plan(self):
        """[(name, container, kind)] in emission order; kind: large|edge|chain|cycle|special|plain."""
        m = self.a.groups
        plan = []
        fixed = ([(g, "large") for g in LARGE_GROUPS] + [(g, "edge") for g in EDGE_GROUPS] +
                 [("nest-chain-%d" % k, "chain") for k in range(CHAIN_LEN)] +
                 [(g, "cycle") for g in CYCLE] + [(g, "special") for g in SPECIAL_GROUPS])
        if m < len(fixed):   # small runs: only the large groups, then ordinary ones
            fixed = [(g, "large") for g in LARGE_GROUPS][:m]
        for name, kind in fixed:
            plan.append((name, self.groups, kind))
        for j in range(len(plan), m):
            name = "%s-%s-%03d" % (self.rng.choice(GROUP_WORDS), self.rng.choice(GROUP_WORDS), j)
            plan.append((name, self.container(self.pick_weighted(GROUP_OUS), self.groups), "plain"))
        return plan

    def emit_groups(self, out):
        a = self.a
        n = a.users
        plan = self.group_plan()
        self.groups_dn = ["cn=%s,%s" % (dn_escape(name), c) for name, c, _ in plan]
        index = {name: j for j, (name, _, _) in enumerate(plan)}
        large_sizes = [n, n // 2, n // 4]
        for j, (name, container, kind) in enumerate(plan):
            dn = self.groups_dn[j]
            if kind == "large":
                size = large_sizes[LARGE_GROUPS.index(name)]
            else:
                size = int(a.size_scale * self.rng.paretovariate(a.alpha))
                size = max(1, min(size, max(1, n // 2)))
            if kind in ("chain", "cycle"):
                size = min(size, 3)
            members = [self.users[k] for k in sorted(self.rng.sample(range(n), min(size, n)))] if n else []
            nested = []
            note = None
            if kind == "chain":
                k = int(name.rsplit("-", 1)[1])
                if k > 0:
                    nested.append(self.groups_dn[index["nest-chain-%d" % (k - 1)]])
                note = "nesting chain: contains nest-chain-%d" % (k - 1) if k else "nesting chain bottom"
            elif kind == "cycle":
                nxt = CYCLE[(CYCLE.index(name) + 1) % len(CYCLE)]
                nested.append(self.groups_dn[index[nxt]])        # forward reference closes the cycle
                note = "nesting cycle: contains %s" % nxt
            elif kind == "special" and name == "dn-spelling" and n >= 3:
                # user 2 (with edge cases: the "Müller, José" user) spelled differently:
                # upper-case attribute types and hex escapes. Same DN by RFC 4514 rules.
                typ, val, cont = self.user_rdn[2]
                alt_cont = ",".join(part.split("=", 1)[0].upper() + "=" + part.split("=", 1)[1]
                                    for part in cont.split(","))
                members = [typ.upper() + "=" + dn_hex_escape(val) + "," + alt_cont]
                note = ("member DN spelled differently (hex escapes, upper-case types) from the DN "
                        "of user 2 (uid %s)" % val if typ == "uid" else
                        "member DN spelled differently (hex escapes, upper-case types) from the DN "
                        "of user 2 (employeeNumber 100002)")
            elif kind == "special" and name == "dangling-ref":
                members = members[:2] + ["uid=ghost-does-not-exist,%s" % self.people]
                note = "one member DN does not exist"
            elif kind == "plain" and j > len(LARGE_GROUPS) and self.rng.random() < a.nested_frac:
                firsts = [k for k in range(len(LARGE_GROUPS), j)
                          if plan[k][2] in ("plain", "edge")]
                if firsts:
                    for k in sorted(self.rng.sample(firsts, min(self.rng.randint(1, 3), len(firsts)))):
                        nested.append(self.groups_dn[k])        # earlier groups only: acyclic
            if kind == "edge":
                note = "edge-case group name"
            attrs = [("objectClass", ["top", "groupOfNames"]), ("cn", name)]
            all_members = members + nested
            if not all_members:                                   # groupOfNames MUST have a member
                all_members = [self.users[0]] if n else ["cn=placeholder," + a.suffix]
            desc = "generated group %d, %d direct members" % (j, len(all_members))
            if note:
                desc += "; " + note
            attrs.append(("description", desc))
            if n and self.rng.random() < 0.3:
                attrs.append(("owner", self.users[self.rng.randrange(n)]))
            attrs.append(("member", all_members))
            self.uuid_key = "group:" + name
            fold_long = kind != "plain" or self.rng.random() < 0.1
            self.out_entry(out, dn, attrs, fold_long)
            self.stats["groups"] += 1
            self.stats["nested_edges"] += len(nested)
            self.stats["member_values"] += len(all_members)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", "-n", type=int, default=300)
    p.add_argument("--groups", "-m", type=int, default=40)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--suffix", default="dc=example,dc=com")
    p.add_argument("--with-uuid", action="store_true",
                   help="explicit deterministic entryUUIDs (for slapadd / LDIF sources; not ldapadd)")
    p.add_argument("--no-base", action="store_true",
                   help="leave out the suffix entry, ou=people and ou=groups (sub-OUs stay)")
    p.add_argument("--mail-domain", default=None, help="default: the dc= parts of the suffix")
    p.add_argument("--alpha", type=float, default=1.2, help="Pareto shape of ordinary group sizes")
    p.add_argument("--size-scale", type=float, default=3.0, help="Pareto scale (smallest size)")
    p.add_argument("--nested-frac", type=float, default=0.1,
                   help="share of ordinary groups that contain 1-3 earlier groups")
    p.add_argument("--fanout", type=int, default=8, help="direct reports per manager")
    p.add_argument("--passwords", type=int, default=5, help="the first K users get a userPassword")
    p.add_argument("--password", default="Passw0rd!")
    p.add_argument("--list-edge-cases", action="store_true")
    p.add_argument("--stats", action="store_true", help="print counts to stderr")
    p.add_argument("--out", "-o", default="-", help="output file ('-': stdout)")
    a = p.parse_args()
    if a.users < 0 or a.groups < 0:
        p.error("--users and --groups must be >= 0")
    if a.list_edge_cases:
        for k, e in enumerate(EDGE_USERS, 1):
            print("user %2d: cn=%r rdn=%s (%s)" % (k, e[2], e[3], e[4]))
        for g in EDGE_GROUPS:
            print("group: cn=%r" % g)
        return
    g = Gen(a)
    out = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8", newline="\n")
    g.emit_ous(out)
    g.emit_users(out)
    g.emit_groups(out)
    if out is not sys.stdout:
        out.close()
    s = g.stats
    print("generated %d users, %d groups, %d OU/base entries (seed=%d)"
          % (s["users"], s["groups"], s["ous"], a.seed), file=sys.stderr)
    if a.stats:
        for k in sorted(s):
            print("  %s: %s" % (k, s[k]), file=sys.stderr)


if __name__ == "__main__":
    main()
