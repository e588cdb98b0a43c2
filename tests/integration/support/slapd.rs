//! Throw-away OpenLDAP servers (a real `slapd`) for the integration tests.
//!
//! [`Slapd::start`] runs `tests/support/slapd/start-slapd.sh` into a fresh temporary
//! directory on a free port pair (StartTLS on `port`, LDAPS on `port + 1`), bulk-loads the
//! given LDIF files offline, and returns the connection details; dropping the [`Slapd`] stops
//! the server and deletes the directory. The admin (rootdn) can write; the service account
//! (`svc_dn`) reads everything but passwords, without size limit.
//!
//! A missing `slapd` fails the test with install instructions: LDAP tests are never skipped.
//!
//! Only `std` and `tempfile`. Include it from the integration test crate, e.g.
//! `mod support { pub mod slapd; }` with this file at `tests/integration/support/slapd.rs`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tempfile::TempDir;

/// Exit codes of start-slapd.sh.
const EXIT_MISSING_PROGRAMS: i32 = 3;
const EXIT_PORT_IN_USE: i32 = 4;
/// How often a start is retried when the port pair was taken between picking and binding.
const START_ATTEMPTS: usize = 6;

/// A running slapd. Stopped (and its directory removed) on drop.
pub struct Slapd {
    /// The instance directory: `slapd.d/`, `data/`, `tls/`, `run/`, `slapd.log`, `env`.
    pub dir: TempDir,
    /// Plain + StartTLS port; LDAPS listens on `port + 1`.
    pub port: u16,
    /// `ldap://127.0.0.1:{port}` (use StartTLS on it).
    pub ldap_url: String,
    /// `ldaps://127.0.0.1:{port + 1}`.
    pub ldaps_url: String,
    /// The suffix, `dc=example,dc=com` unless started with another `SUFFIX`.
    pub base: String,
    /// `cn=admin,{base}`: the rootdn, unrestricted read and write.
    pub admin_dn: String,
    pub admin_pw: String,
    /// `cn=svc-sync,ou=services,{base}`: read access, no size/time limits.
    pub svc_dn: String,
    pub svc_pw: String,
    /// PEM of the CA that signed the server certificate (SAN IP:127.0.0.1, DNS:localhost).
    pub ca_file: PathBuf,
    /// PEM of an unrelated CA: a client trusting only this must refuse the server.
    pub other_ca_file: PathBuf,
    /// slapd's process id.
    pub pid: u32,
    stopped: bool,
}

/// The repository root (the engine crate's parent directory).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or_else(|e| panic!("cannot resolve the repository root {}: {e}", root.display()))
}

/// The committed sample directory, `examples/directory.ldif`.
pub fn example_ldif() -> PathBuf {
    repo_root().join("examples").join("directory.ldif")
}

fn support_dir() -> PathBuf {
    repo_root().join("tests").join("support")
}

impl Slapd {
    /// Starts a fresh slapd with the given LDIF files bulk-loaded (`slapadd`, before start).
    /// Base entries (suffix, ou=people, ou=groups, ou=services, the service account) are
    /// created unless an LDIF already has them. Panics with the script's output and the
    /// tail of slapd.log if anything goes wrong.
    pub fn start(ldifs: &[&Path]) -> Slapd {
        Slapd::start_with(ldifs, &[])
    }

    /// Like [`Slapd::start`], with extra environment for start-slapd.sh, e.g.
    /// `("SUFFIX", "dc=corp,dc=test")`, `("SLAPD_LOGLEVEL", "stats")`, `("SIZE_LIMIT", "50")`,
    /// `("ACCESSLOG", "0")`, `("TLS_KEY_TYPE", "rsa")`, `("SVC_PW", "…")`.
    pub fn start_with(ldifs: &[&Path], env: &[(&str, &str)]) -> Slapd {
        let script = support_dir().join("slapd").join("start-slapd.sh");
        for l in ldifs {
            assert!(l.is_file(), "Slapd::start: LDIF file {} does not exist", l.display());
        }
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("roster-slapd-")
                .tempdir()
                .expect("create a temporary directory for slapd");
            let port = pick_port_pair();
            let out = Command::new("bash")
                .arg(&script)
                .arg(dir.path())
                .arg(port.to_string())
                .args(ldifs.iter().map(|p| p.as_os_str()))
                // the script's watchdog stops slapd if this test process dies without Drop
                .env("OWNER_PID", std::process::id().to_string())
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run bash {}: {e}", script.display()));
            match out.status.code() {
                Some(0) => return Slapd::from_env_file(dir, port),
                Some(EXIT_PORT_IN_USE) if attempt < START_ATTEMPTS => {
                    last_failure = String::from_utf8_lossy(&out.stderr).into_owned();
                    eprintln!("slapd: port pair {port}/{} was taken, retrying ({attempt})", port + 1);
                    continue;
                }
                code => {
                    let hint = if code == Some(EXIT_MISSING_PROGRAMS) {
                        "\nOpenLDAP is required for these tests and is not installed.\n\
                         Install it with: apt-get install slapd ldap-utils   (or run .ci/run as root)\n"
                    } else {
                        ""
                    };
                    panic!(
                        "start-slapd.sh {} {port} failed ({}){hint}\n--- stderr ---\n{}\n--- stdout ---\n{}\n--- slapd.log (tail) ---\n{}",
                        dir.path().display(),
                        describe_status(&out),
                        String::from_utf8_lossy(&out.stderr),
                        String::from_utf8_lossy(&out.stdout),
                        tail_file(&dir.path().join("slapd.log"), 40),
                    );
                }
            }
        }
        panic!(
            "could not find a free port pair for slapd after {START_ATTEMPTS} attempts; last error:\n{last_failure}"
        );
    }

    fn from_env_file(dir: TempDir, port: u16) -> Slapd {
        let env_path = dir.path().join("env");
        let text = std::fs::read_to_string(&env_path)
            .unwrap_or_else(|e| panic!("start-slapd.sh succeeded but {} is unreadable: {e}", env_path.display()));
        let vars = parse_env_file(&text);
        let get = |k: &str| -> String {
            vars.get(k).cloned().unwrap_or_else(|| panic!("{} has no {k}:\n{text}", env_path.display()))
        };
        let pid: u32 =
            get("SLAPD_PID").parse().unwrap_or_else(|e| panic!("bad SLAPD_PID in {}: {e}", env_path.display()));
        let env_port: u16 =
            get("LDAP_PORT").parse().unwrap_or_else(|e| panic!("bad LDAP_PORT in {}: {e}", env_path.display()));
        assert_eq!(env_port, port, "start-slapd.sh reports another port than it was given");
        Slapd {
            port,
            ldap_url: get("LDAP_URI"),
            ldaps_url: get("LDAPS_URI"),
            base: get("LDAP_BASE"),
            admin_dn: get("LDAP_ADMIN_DN"),
            admin_pw: get("LDAP_ADMIN_PW"),
            svc_dn: get("LDAP_SVC_DN"),
            svc_pw: get("LDAP_SVC_PW"),
            ca_file: PathBuf::from(get("LDAPTLS_CACERT")),
            other_ca_file: PathBuf::from(get("OTHER_CA")),
            pid,
            stopped: false,
            dir,
        }
    }

    /// The LDAPS port (`port + 1`).
    pub fn ldaps_port(&self) -> u16 {
        self.port + 1
    }

    /// `ldap://localhost:{port}`: for tests of host-name verification (the certificate
    /// carries DNS:localhost and the machine's host name as well as IP:127.0.0.1).
    pub fn ldap_url_localhost(&self) -> String {
        format!("ldap://localhost:{}", self.port)
    }

    /// The last `lines` lines of slapd.log (start with `("SLAPD_LOGLEVEL", "stats")` to
    /// have operations logged).
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.dir.path().join("slapd.log"), lines)
    }

    /// An OpenLDAP client command (`ldapsearch`, `ldapmodify`, …) that trusts `ca_file`.
    pub fn client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("LDAPTLS_CACERT", &self.ca_file).env("LDAPTLS_REQCERT", "demand").stdin(Stdio::null());
        c
    }

    /// Runs `program -x -H ldap_url -ZZ -D admin -w pw -o nettimeout=20 ARGS`, feeding
    /// `stdin`; panics with stderr unless it exits 0. Returns the output.
    pub fn run_admin(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let out = self.run_admin_status(program, args, stdin);
        if !out.status.success() {
            panic!(
                "{program} {} as {} on {} failed ({})\n--- stderr ---\n{}\n--- stdout ---\n{}\n--- input ---\n{}",
                args.join(" "),
                self.admin_dn,
                self.ldap_url,
                describe_status(&out),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
                stdin.unwrap_or("(none)"),
            );
        }
        out
    }

    /// Like [`Slapd::run_admin`] but returns the output whatever the exit status.
    pub fn run_admin_status(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.client(program);
        cmd.args(["-x", "-H", &self.ldap_url, "-ZZ", "-D", &self.admin_dn, "-w", &self.admin_pw])
            .args(["-o", "nettimeout=20"])
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} (install with: apt-get install ldap-utils): {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("child stdin was requested as a pipe");
            // A writer thread, so a large LDIF cannot deadlock against a full stdout pipe.
            let input = input.to_owned();
            let writer = std::thread::spawn(move || {
                // An early exit of the child shows up as its exit status; ignore EPIPE here.
                let _ = pipe.write_all(input.as_bytes());
            });
            let out = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {program} failed: {e}"));
            writer.join().expect("stdin writer thread panicked");
            out
        } else {
            child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {program} failed: {e}"))
        }
    }

    /// Applies LDIF change records (`changetype: modify` / `add` / `delete` / `modrdn`) as
    /// the admin over StartTLS. Panics with ldapmodify's stderr on failure.
    pub fn ldapmodify(&self, ldif: &str) {
        self.run_admin("ldapmodify", &[], Some(ldif));
    }

    /// A `[[tenant]]` reading this server as the service account (its
    /// password in the file `ldap-password`) over StartTLS, with `sync`.
    pub fn realtime_tenant_toml(&self, tenant: &str, sync: &str) -> String {
        format!(
            r#"[[tenant]]
id = "{tenant}"
[[tenant.source]]
name = "corp"
kind = "ldap"
url = "{url}"
starttls = true
ca_file = {ca:?}
bind_dn = "{svc}"
bind_password = {{ file = "ldap-password" }}
user_base = "ou=people,{base}"
group_base = "ou=groups,{base}"
sync = {sync}
[tenant.mapping]
userName = "lower(uid)"
displayName = "coalesce(displayName, cn)"
"#,
            url = self.ldap_url,
            ca = self.ca_file.display().to_string(),
            svc = self.svc_dn,
            base = self.base,
        )
    }

    /// Adds the entries of an LDIF (content records; `changetype` optional) as the admin.
    pub fn ldapadd(&self, ldif: &str) {
        self.run_admin("ldapmodify", &["-a"], Some(ldif));
    }

    /// Deletes one entry (a leaf) as the admin.
    pub fn ldapdelete(&self, dn: &str) {
        self.run_admin("ldapdelete", &[dn], None);
    }

    /// Renames / moves an entry, removing the old RDN value (`deleteoldrdn: 1`).
    pub fn modrdn(&self, dn: &str, new_rdn: &str, new_superior: Option<&str>) {
        let mut args = vec!["-r"];
        if let Some(sup) = new_superior {
            args.extend(["-s", sup]);
        }
        args.extend([dn, new_rdn]);
        self.run_admin("ldapmodrdn", &args, None);
    }

    /// Number of entries under `base` (subtree, as the admin: no size limit, paged) that
    /// match `filter`. A `base` that does not exist counts 0.
    pub fn search_count(&self, base: &str, filter: &str) -> usize {
        let out = self.run_admin_status(
            "ldapsearch",
            &["-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt", "-b", base, filter, "1.1"],
            None,
        );
        match out.status.code() {
            Some(0) => {}
            Some(32) => return 0, // noSuchObject: the base is gone
            _ => panic!(
                "ldapsearch -b {base:?} {filter:?} failed ({})\n{}",
                describe_status(&out),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("dn:")).count()
    }

    /// Raw LDIF (unwrapped, `-LLL`) of a subtree search as the admin; `attrs` empty = all
    /// user attributes, `["+"]` = operational ones (entryUUID, entryCSN, …).
    pub fn search(&self, base: &str, filter: &str, attrs: &[&str]) -> String {
        let mut args = vec!["-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt", "-b", base, filter];
        args.extend_from_slice(attrs);
        let out = self.run_admin("ldapsearch", &args, None);
        String::from_utf8(out.stdout).expect("ldapsearch output is UTF-8 (binary values are base64)")
    }

    /// The entryUUID of one entry, read as the admin.
    pub fn entry_uuid(&self, dn: &str) -> String {
        let out = self.run_admin(
            "ldapsearch",
            &["-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b", dn, "(objectClass=*)", "entryUUID"],
            None,
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("entryUUID: ").map(str::to_owned))
            .unwrap_or_else(|| panic!("no entryUUID for {dn}"))
    }

    /// Starts the stopped slapd again on the same ports with the same data
    /// (an outage that ends). Panics unless it answers within 20 s.
    pub fn restart(&mut self) {
        assert!(self.stopped, "restart: slapd is running");
        let bin = ["/usr/sbin/slapd", "/usr/local/sbin/slapd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("slapd");
        let dir = self.dir.path();
        let urls = format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/", self.port, self.port + 1);
        let log = std::fs::OpenOptions::new().append(true).create(true).open(dir.join("slapd.log")).expect("slapd.log");
        let _ = std::fs::remove_file(dir.join("run").join("slapd.pid"));
        let child = Command::new("setsid")
            .arg(bin)
            .args(["-d", "0", "-s", "0", "-F"])
            .arg(dir.join("slapd.d"))
            .args(["-h", &urls])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start slapd again");
        self.pid = child.id();
        self.stopped = false;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ok = self
                .client("ldapsearch")
                .args(["-x", "-H", &self.ldap_url, "-ZZ", "-b", "", "-s", "base", "1.1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "slapd did not come back:\n{}", self.log_tail(20));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if let Some(pid) =
            std::fs::read_to_string(dir.join("run").join("slapd.pid")).ok().and_then(|p| p.trim().parse().ok())
        {
            self.pid = pid;
        }
    }

    /// Stops slapd now (idempotent; drop calls it). The directory stays until drop.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let script = support_dir().join("slapd").join("stop-slapd.sh");
        let ok = Command::new("bash")
            .arg(&script)
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                if !o.status.success() {
                    eprintln!(
                        "stop-slapd.sh {} failed: {}",
                        self.dir.path().display(),
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
                o.status.success()
            })
            .unwrap_or(false);
        if !ok && pid_is_our_slapd(self.pid, self.dir.path()) {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- slapd {} (pid {}), slapd.log tail ---\n{}", self.ldap_url, self.pid, self.log_tail(20));
        }
        self.stop();
    }
}

fn pid_is_our_slapd(pid: u32, dir: &Path) -> bool {
    let needle = format!("{}/slapd.d", dir.display());
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&needle))
        .unwrap_or(false)
}

/// Ports handed out by this process; never handed out twice (threads start servers in
/// parallel, and a just-stopped server's port is better left alone).
fn reserved_ports() -> &'static Mutex<HashSet<u16>> {
    static RESERVED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    RESERVED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port P such that P and P+1 are free right now on 127.0.0.1. Another process can still
/// take one before slapd binds; start-slapd.sh then exits 4 and [`Slapd::start`] retries.
fn pick_port_pair() -> u16 {
    for _ in 0..500 {
        let first = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 to find a free port");
        let port = first.local_addr().expect("local address of a bound listener").port();
        if port == u16::MAX {
            continue;
        }
        let Ok(second) = TcpListener::bind(("127.0.0.1", port + 1)) else {
            continue;
        };
        {
            let mut reserved = reserved_ports().lock().unwrap_or_else(|e| e.into_inner());
            if reserved.contains(&port) || reserved.contains(&(port + 1)) {
                continue;
            }
            reserved.insert(port);
            reserved.insert(port + 1);
        }
        drop(first);
        drop(second);
        return port;
    }
    panic!("no free pair of adjacent ports on 127.0.0.1 after 500 tries");
}

fn describe_status(out: &Output) -> String {
    match out.status.code() {
        Some(c) => format!("exit status {c}"),
        None => format!("{}", out.status),
    }
}

fn tail_file(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Parses the `KEY=value` lines start-slapd.sh writes (values are sh-quoted).
fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.trim().to_owned(), sh_unquote(v));
        }
    }
    vars
}

/// Undoes sh quoting: '…' literal, "…" with \\ \" \$ \` escapes, \x outside quotes.
fn sh_unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(n @ ('\\' | '"' | '$' | '`')) => out.push(n),
                            Some(n) => {
                                out.push('\\');
                                out.push(n);
                            }
                            None => out.push('\\'),
                        },
                        _ => out.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

// ------------------------------------------------------------------------------- test data

/// Generates a directory with `tests/support/gen-directory.py` (deterministic for the same
/// arguments): the tree (suffix, ou=people, ou=groups, sub-OUs), `users` users, `groups`
/// groups, explicit entryUUIDs (uuid5 of the uid / group name). For [`Slapd::start`] and
/// `kind = "ldif"` sources. Generated once per process and argument set.
pub fn gen_ldif(users: usize, groups: usize, seed: u64) -> PathBuf {
    gen_ldif_args(&[
        "--users",
        &users.to_string(),
        "--groups",
        &groups.to_string(),
        "--seed",
        &seed.to_string(),
        "--with-uuid",
    ])
}

/// gen-directory.py with any arguments (see its --help), e.g. without `--with-uuid` and
/// with `--no-base` for an LDIF that `ldapadd` accepts into a running server.
pub fn gen_ldif_args(args: &[&str]) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<Vec<String>, PathBuf>>> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let key: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(&key).filter(|p| p.is_file()) {
        return p.clone();
    }
    let dir = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    }
    .join("gen-directory");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let stem: String = key
        .join("_")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '=' { c } else { '_' })
        .take(120)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = dir.join(format!("{stem}.{}.{n}.ldif", std::process::id()));
    let script = support_dir().join("gen-directory.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .arg("--out")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (install with: apt-get install python3): {e}"));
    if !out.status.success() {
        panic!(
            "python3 {} {} failed ({}):\n{}",
            script.display(),
            args.join(" "),
            describe_status(&out),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cache.insert(key, file.clone());
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_unquoted() {
        assert_eq!(sh_unquote("'dc=example,dc=com'"), "dc=example,dc=com");
        assert_eq!(sh_unquote(r"'it'\''s a $secret'"), "it's a $secret");
        assert_eq!(sh_unquote(r"dc=example\,dc=com"), "dc=example,dc=com");
        assert_eq!(sh_unquote(r#""a\"b""#), "a\"b");
        assert_eq!(sh_unquote("plain"), "plain");
        let vars = parse_env_file("# c\nA='x y'\nB=2\n");
        assert_eq!(vars["A"], "x y");
        assert_eq!(vars["B"], "2");
    }
}
