//! Independent servers the tests talk to, from PyPI, in a virtual environment
//! the harness creates once under the target directory (never the system
//! Python, which Samba's bindings need as it is).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The venv's python, with `packages` installed (created on first use).
pub fn python_with(packages: &[&str]) -> PathBuf {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = LOCK.get_or_init(|| Mutex::new(())).lock().unwrap_or_else(|p| p.into_inner());
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers-venv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        let out = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().expect("python3 -m venv");
        assert!(
            out.status.success(),
            "cannot create a Python venv for the test peers (apt-get install python3-venv): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let missing: Vec<&&str> = packages
        .iter()
        .filter(|p| {
            !Command::new(&python)
                .args(["-c", &format!("import {}", p.replace('-', "_"))])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(missing.iter().map(|s| **s))
            .output()
            .expect("pip");
        assert!(out.status.success(), "pip install {missing:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    python
}

/// aiosmtpd on 127.0.0.1, saving every message to a maildir.
pub struct SmtpServer {
    child: Child,
    pub addr: String,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let python = python_with(&["aiosmtpd"]);
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let maildir = tempfile::tempdir().expect("maildir");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "aiosmtpd did not start on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer { child, addr, maildir }
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail").join("new");
        std::fs::read_dir(new)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scim2-server` from PyPI on 127.0.0.1, accepting one bearer token,
/// holding its resources in memory.
pub struct ScimServer {
    child: Child,
    pub addr: String,
    pub token: String,
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScimServer {
    pub fn start(token: &str) -> ScimServer {
        let python = python_with(&["scim2_server"]);
        let bin = python.parent().expect("bin").join("scim2-server");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let child = Command::new(bin)
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scim2-server");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "scim2-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        ScimServer { child, addr, token: token.to_string() }
    }

    /// (status, JSON body) of one request.
    pub fn request(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
        use std::io::{Read, Write};
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        )
        .expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        // The server may answer in chunks.
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        self.request("GET", path, None).1
    }

    /// Creates `count` users (`user{i}`, given name Jörg, `user{i}@example.org`)
    /// through /Bulk, 500 a request; returns their ids in order.
    pub fn load_users(&self, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for chunk_start in (0..count).step_by(500) {
            let ops: Vec<serde_json::Value> = (chunk_start..count.min(chunk_start + 500))
                .map(|i| {
                    serde_json::json!({
                        "method": "POST", "path": "/Users", "bulkId": format!("u{i}"),
                        "data": {
                            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": format!("user{i}"),
                            "name": {"givenName": "Jörg", "familyName": format!("Family{i}")},
                            "emails": [{"value": format!("user{i}@example.org"), "primary": true}],
                        }
                    })
                })
                .collect();
            let (status, body) = self.request(
                "POST",
                "/Bulk",
                Some(&serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops})),
            );
            assert_eq!(status, 200, "bulk create: {body}");
            for op in body["Operations"].as_array().expect("operations") {
                let location = op["location"].as_str().expect("location");
                ids.push(location.rsplit('/').next().expect("id").to_string());
            }
        }
        ids
    }

    /// Creates a group with these member ids; returns its id.
    pub fn create_group(&self, name: &str, members: &[String]) -> String {
        let members: Vec<serde_json::Value> = members.iter().map(|m| serde_json::json!({"value": m})).collect();
        let (status, body) = self.request(
            "POST",
            "/Groups",
            Some(&serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name, "members": members})),
        );
        assert_eq!(status, 201, "create group: {body}");
        body["id"].as_str().expect("id").to_string()
    }

    /// Changes a user's userName (PATCH replace).
    pub fn rename_user(&self, id: &str, user_name: &str) {
        let (status, body) = self.request(
            "PATCH",
            &format!("/Users/{id}"),
            Some(&serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "userName", "value": user_name}]
            })),
        );
        assert!(status == 200 || status == 204, "patch: {status} {body}");
    }

    pub fn delete(&self, path: &str) {
        let (status, body) = self.request("DELETE", &format!("/{path}"), None);
        assert_eq!(status, 204, "delete {path}: {body}");
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n.min(after.len())]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}
