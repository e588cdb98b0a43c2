//! A real HTTP receiver for webhooks and notifications: records each
//! request's status it answered with, headers (lower-cased names) and body.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a receiver got: (the status it answered, headers, body).
pub type Log = Arc<Mutex<Vec<(u16, BTreeMap<String, String>, String)>>>;

pub struct Receiver {
    pub url: String,
    pub log: Log,
}

/// A receiver on a free loopback port that refuses the first `fail_first`
/// requests with 503.
pub fn receiver(fail_first: usize) -> Receiver {
    receiver_on(TcpListener::bind("127.0.0.1:0").expect("bind"), fail_first)
}

/// The same on a listener of the caller's (a port that must stay the same).
pub fn receiver_on(listener: TcpListener, fail_first: usize) -> Receiver {
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(AtomicUsize::new(0));
    let store = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut headers = BTreeMap::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0u8; length];
            if length == 0 || reader.read_exact(&mut body).is_err() {
                // The sender died mid-request (a test kills `serve`): nothing
                // arrived, nothing is answered, so it is not a delivery.
                continue;
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let status = if n < fail_first { 503 } else { 204 };
            store.lock().expect("lock").push((status, headers, String::from_utf8_lossy(&body).into_owned()));
            let reply = if status == 503 {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    Receiver { url, log }
}
