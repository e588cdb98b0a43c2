//! A real Active Directory for the tests: Samba's AD DC, provisioned by
//! `tests/support/samba/start-samba-ad.sh` into a temporary directory on
//! 127.0.0.1, loaded with a generated domain (`gen-directory.py --flavor ad`:
//! 2,100 users, 40 groups, one of 1,600 members) plus `scenario.ldif`.
//!
//! Samba's LDAP ports are fixed (389, 636), so there is one DC per machine:
//! [`Samba::shared`] starts it once per test process and hands it out behind a
//! mutex, so AD tests run one at a time. A watchdog started by the script
//! stops the DC when the test process is gone. A missing Samba fails the test
//! with install instructions: AD tests are never skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tempfile::TempDir;

use super::repo_root;

const EXIT_MISSING_PROGRAMS: i32 = 3;
const EXIT_PORT_IN_USE: i32 = 4;

/// Users and groups the generated part of the domain has.
pub const GENERATED_USERS: usize = 2100;
pub const LARGE_GROUP: &str = "all-staff";
pub const LARGE_GROUP_MEMBERS: usize = 1600;

pub struct Samba {
    pub dir: TempDir,
    pub base: String,
    pub ldaps_url: String,
    pub ldap_url: String,
    pub admin_dn: String,
    pub admin_pw: String,
    pub ca_file: PathBuf,
    ldapi: String,
}

fn support_dir() -> PathBuf {
    repo_root().join("tests").join("support").join("samba")
}

impl Samba {
    /// The process's one domain controller, started on first use.
    pub fn shared() -> MutexGuard<'static, Samba> {
        static DC: OnceLock<Mutex<Samba>> = OnceLock::new();
        let dc = DC.get_or_init(|| Mutex::new(Samba::start()));
        // A test that panicked while holding the DC leaves it usable: each test
        // only adds or changes its own objects.
        dc.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start() -> Samba {
        let dir = tempfile::Builder::new().prefix("roster-samba-").tempdir().expect("temp dir for samba");
        let data = dir.path().join("domain.ldif");
        let generated = Command::new("python3")
            .arg(support_dir().join("gen-directory.py"))
            .args(["--flavor", "ad", "--with-base", "--seed", "7", "--groups", "40", "--large-groups", "1"])
            .args(["--users", &GENERATED_USERS.to_string(), "--large-min", &LARGE_GROUP_MEMBERS.to_string()])
            .arg("-o")
            .arg(&data)
            .output()
            .expect("run python3 gen-directory.py");
        assert!(generated.status.success(), "gen-directory.py failed: {}", String::from_utf8_lossy(&generated.stderr));
        let instance = dir.path().join("dc");
        let out = Command::new("bash")
            .arg(support_dir().join("start-samba-ad.sh"))
            .arg(&instance)
            .arg(&data)
            .arg(support_dir().join("scenario.ldif"))
            .env("OWNER_PID", std::process::id().to_string())
            // The shared DC lives in a static, never dropped: the watchdog cleans up.
            .env("CLEANUP_DIR", dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run start-samba-ad.sh");
        match out.status.code() {
            Some(0) => {}
            code => {
                let hint = match code {
                    Some(EXIT_MISSING_PROGRAMS) => {
                        "\nSamba's AD DC is required for these tests and is not installed.\n\
                         Install it with: apt-get install samba samba-ad-dc samba-ad-provision ldap-utils   (or run .ci/run as root)\n"
                    }
                    Some(EXIT_PORT_IN_USE) => {
                        "\nPort 389/636 is taken: another LDAP server (a system slapd, an earlier samba) is running.\n"
                    }
                    _ => "",
                };
                panic!(
                    "start-samba-ad.sh failed ({:?}){hint}\n--- stderr ---\n{}\n--- samba.out (tail) ---\n{}",
                    code,
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(instance.join("log").join("samba.out"))
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        let env = std::fs::read_to_string(instance.join("env")).expect("samba env file");
        let get = |k: &str| -> String {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('\'').replace("\\-", "-"))
                .unwrap_or_else(|| panic!("{k} missing from the samba env file"))
        };
        Samba {
            base: get("AD_BASE"),
            ldaps_url: get("AD_LDAPS_URI"),
            ldap_url: get("AD_LDAP_URI"),
            admin_dn: get("AD_ADMIN_DN"),
            admin_pw: "Adm1n-Secret-42".into(),
            ca_file: PathBuf::from(get("AD_CACERT")),
            ldapi: get("AD_LDAPI_PRIV_URI"),
            dir,
        }
    }

    fn admin(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(program);
        c.args(["-x", "-H", &self.ldapi, "-D", &self.admin_dn, "-w", &self.admin_pw]).args(args);
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        if let Some(text) = stdin {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            stdin.unwrap_or("")
        );
        out
    }

    /// Applies an LDIF change record as Administrator.
    pub fn ldapmodify(&self, ldif: &str) {
        self.admin("ldapmodify", &[], Some(ldif));
    }

    pub fn ldapdelete(&self, dn: &str) {
        self.admin("ldapdelete", &[dn], None);
    }

    /// Renames and/or moves an entry.
    pub fn modrdn(&self, dn: &str, new_rdn: &str, new_superior: Option<&str>) {
        let mut args = vec!["-r"];
        if let Some(s) = new_superior {
            args.extend(["-s", s]);
        }
        args.extend([dn, new_rdn]);
        self.admin("ldapmodrdn", &args, None);
    }

    /// `objectGUID` of an entry in Roster's text form, read with ldapsearch.
    pub fn guid(&self, dn: &str) -> String {
        let out = self.admin("ldapsearch", &["-LLL", "-o", "ldif-wrap=no", "-b", dn, "-s", "base", "objectGUID"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        let b64 = text.lines().find_map(|l| l.strip_prefix("objectGUID:: ")).expect("objectGUID in ldapsearch output");
        let bytes = base64_decode(b64.trim());
        assert_eq!(bytes.len(), 16, "objectGUID is 16 bytes");
        let b = &bytes;
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }

    /// The relative id (last sub-authority) of an entry's objectSid.
    pub fn rid(&self, dn: &str) -> u32 {
        let out = self.admin("ldapsearch", &["-LLL", "-o", "ldif-wrap=no", "-b", dn, "-s", "base", "objectSid"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        let b64 = text.lines().find_map(|l| l.strip_prefix("objectSid:: ")).expect("objectSid in ldapsearch output");
        let bytes = base64_decode(b64.trim());
        let n = bytes.len();
        assert!(n >= 12, "objectSid too short");
        u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]])
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}
