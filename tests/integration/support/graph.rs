//! The Microsoft Graph test server (`tests/graph-server`, built as the
//! `roster-graph-test-server` binary) as a child process on 127.0.0.1, and a
//! small client for its `/_admin` endpoints. Dropping the handle closes the
//! server's stdin, which stops it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use serde_json::{Value, json};

pub const TENANT: &str = "0d5ea8f2-6b1c-4f1e-9a7e-1e2d3c4b5a69";
pub const CLIENT_ID: &str = "5b0e2a8c-7d3f-4e41-b1a2-93c4d5e6f708";
pub const CLIENT_SECRET: &str = "s3cr3t~Value.from-the-portal";

pub struct GraphServer {
    child: Child,
    _stdin: ChildStdin,
    pub url: String,
    /// `host:port`, for the admin client.
    addr: String,
}

impl GraphServer {
    /// Starts the server with `users` users and `groups` groups.
    pub fn start(users: usize, groups: usize, extra: &[&str]) -> GraphServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roster-graph-test-server"))
            .args(["--tenant", TENANT, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .args(["--users", &users.to_string(), "--groups", &groups.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start roster-graph-test-server");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the server's first line");
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
        let addr = url.trim_start_matches("http://").to_string();
        GraphServer { child, _stdin: stdin, url, addr }
    }

    /// POST /_admin/{action} with a JSON body; returns the JSON answer.
    pub fn admin(&self, action: &str, body: Value) -> Value {
        let payload = body.to_string();
        let mut stream = TcpStream::connect(&self.addr).expect("connect to the test server");
        write!(
            stream,
            "POST /_admin/{action} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            self.addr,
            payload.len()
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "admin {action}: {head}\n{body}");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    pub fn update(&self, id: &str, set: Value) {
        self.admin("update", json!({ "id": id, "set": set }));
    }

    /// Every request the server answered since the last call.
    pub fn requests(&self) -> Vec<String> {
        self.admin("requests", json!({}))
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    pub fn state(&self) -> Value {
        self.admin("state", json!({}))
    }
}

impl Drop for GraphServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate and its PKCS#8 key, for client-assertion auth.
pub fn certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("app-cert.pem"), dir.join("app-key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=roster-test-app"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}
