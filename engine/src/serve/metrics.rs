//! Prometheus metrics for `roster serve` (text exposition format); served at
//! `GET /metrics` by the API (`crate::api`), with `GET /healthz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

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

/// Per tenant (a run covers all the sources it reads).
#[derive(Debug, Default, Clone)]
pub struct TenantMetrics {
    /// Seconds spent inside each kind of plugin, summed over runs.
    pub plugin_seconds: BTreeMap<String, f64>,
    /// Entries in quarantine now, by source and the stage that failed them
    /// (read, map, custom-attributes, conflict, …).
    pub quarantine_by_stage: BTreeMap<(String, String), u64>,
}

#[derive(Default)]
pub struct Metrics {
    sources: Mutex<BTreeMap<(String, String), SourceMetrics>>,
    tenants: Mutex<BTreeMap<String, TenantMetrics>>,
}

impl Metrics {
    pub fn update(&self, tenant: &str, source: &str, f: impl FnOnce(&mut SourceMetrics)) {
        if let Ok(mut m) = self.sources.lock() {
            f(m.entry((tenant.to_string(), source.to_string())).or_default());
        }
    }

    pub fn update_tenant(&self, tenant: &str, f: impl FnOnce(&mut TenantMetrics)) {
        if let Ok(mut m) = self.tenants.lock() {
            f(m.entry(tenant.to_string()).or_default());
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
        drop(m);
        let Ok(t) = self.tenants.lock() else { return out };
        let _ = writeln!(
            out,
            "# HELP roster_plugin_seconds_total Time spent inside plugins, by kind.\n# TYPE roster_plugin_seconds_total counter"
        );
        for (tenant, v) in t.iter() {
            for (kind, secs) in &v.plugin_seconds {
                let _ = writeln!(
                    out,
                    "roster_plugin_seconds_total{{tenant=\"{}\",kind=\"{kind}\"}} {secs}",
                    escape(tenant)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP roster_quarantine_entries Entries in quarantine, by the stage that failed them.\n# TYPE roster_quarantine_entries gauge"
        );
        for (tenant, v) in t.iter() {
            for ((source, stage), n) in &v.quarantine_by_stage {
                let _ = writeln!(
                    out,
                    "roster_quarantine_entries{{{},stage=\"{}\"}} {n}",
                    label(tenant, source),
                    escape(stage)
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_time_and_quarantine_by_stage_are_exposed() {
        let m = Metrics::default();
        m.update("t", "corp", |s| s.healthy = true);
        m.update_tenant("t", |t| {
            t.plugin_seconds.insert("mapper".into(), 0.25);
            t.quarantine_by_stage.insert(("corp".into(), "map".into()), 3);
        });
        let text = m.render();
        assert!(text.contains("roster_plugin_seconds_total{tenant=\"t\",kind=\"mapper\"} 0.25"), "{text}");
        assert!(text.contains("roster_quarantine_entries{tenant=\"t\",source=\"corp\",stage=\"map\"} 3"), "{text}");
    }
}
