//! Prometheus metrics and a health endpoint for `roster serve`:
//! `GET /metrics` (text exposition format) and `GET /healthz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Per tenant and source.
#[derive(Debug, Default, Clone)]
pub struct SourceMetrics {
    pub runs: BTreeMap<String, u64>,
    pub objects_read: u64,
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub quarantined: u64,
    pub errors: u64,
    pub healthy: bool,
    pub last_run_seconds: f64,
    /// Seconds from a realtime change arriving to its run being applied (last run).
    pub lag_seconds: f64,
}

#[derive(Default)]
pub struct Metrics {
    sources: Mutex<BTreeMap<(String, String), SourceMetrics>>,
}

impl Metrics {
    pub fn update(&self, tenant: &str, source: &str, f: impl FnOnce(&mut SourceMetrics)) {
        if let Ok(mut m) = self.sources.lock() {
            f(m.entry((tenant.to_string(), source.to_string())).or_default());
        }
    }

    pub fn all_healthy(&self) -> bool {
        self.sources.lock().map(|m| m.values().all(|s| s.healthy)).unwrap_or(false)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(m) = self.sources.lock() else { return out };
        let label = |t: &str, s: &str| format!("tenant=\"{}\",source=\"{}\"", escape(t), escape(s));
        let series: &[(&str, &str, &str)] = &[
            ("roster_objects_read_total", "counter", "Objects read from the source."),
            ("roster_objects_changed_total", "counter", "Objects created, updated or deleted in the store."),
            ("roster_quarantined_total", "counter", "Entries quarantined."),
            ("roster_errors_total", "counter", "Runs that failed."),
            ("roster_source_healthy", "gauge", "1 when the last run of the source succeeded."),
            ("roster_run_duration_seconds", "gauge", "Duration of the last run."),
            ("roster_realtime_lag_seconds", "gauge", "From a change arriving to its run being applied (last run)."),
        ];
        let _ = writeln!(out, "# HELP roster_runs_total Runs by outcome.\n# TYPE roster_runs_total counter");
        for ((t, s), v) in m.iter() {
            for (status, n) in &v.runs {
                let _ = writeln!(out, "roster_runs_total{{{},status=\"{status}\"}} {n}", label(t, s));
            }
        }
        for (name, ty, help) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            for ((t, s), v) in m.iter() {
                let l = label(t, s);
                match *name {
                    "roster_objects_read_total" => {
                        let _ = writeln!(out, "{name}{{{l}}} {}", v.objects_read);
                    }
                    "roster_objects_changed_total" => {
                        let _ = writeln!(out, "{name}{{{l},change=\"create\"}} {}", v.creates);
                        let _ = writeln!(out, "{name}{{{l},change=\"update\"}} {}", v.updates);
                        let _ = writeln!(out, "{name}{{{l},change=\"delete\"}} {}", v.deletes);
                    }
                    "roster_quarantined_total" => {
                        let _ = writeln!(out, "{name}{{{l}}} {}", v.quarantined);
                    }
                    "roster_errors_total" => {
                        let _ = writeln!(out, "{name}{{{l}}} {}", v.errors);
                    }
                    "roster_source_healthy" => {
                        let _ = writeln!(out, "{name}{{{l}}} {}", u8::from(v.healthy));
                    }
                    "roster_run_duration_seconds" => {
                        let _ = writeln!(out, "{name}{{{l}}} {}", v.last_run_seconds);
                    }
                    _ => {
                        let _ = writeln!(out, "{name}{{{l}}} {}", v.lag_seconds);
                    }
                }
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` until `stop`; returns the bound address.
pub fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<(std::net::SocketAddr, std::thread::JoinHandle<()>), String> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = std::thread::Builder::new()
        .name("roster-http".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let app = Router::new()
                    .route(
                        "/metrics",
                        get(|State(m): State<Arc<Metrics>>| async move {
                            ([("content-type", "text/plain; version=0.0.4")], m.render())
                        }),
                    )
                    .route(
                        "/healthz",
                        get(|State(m): State<Arc<Metrics>>| async move {
                            if m.all_healthy() {
                                (StatusCode::OK, "ok")
                            } else {
                                (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
                            }
                        }),
                    )
                    .with_state(metrics);
                let shutdown = async move {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
            });
        })
        .map_err(|e| e.to_string())?;
    Ok((addr, handle))
}
