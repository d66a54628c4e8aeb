//! `GET /metrics`: what the server counts itself (HTTP requests, execs and their
//! latency) and what it samples per sandbox at scrape time ([`sandbox`]), in the
//! Prometheus text format ([`text`]). Metric names are listed in docs/API.md.

pub mod memory;
pub mod sandbox;
pub mod text;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use sandbox::SandboxSample;
use text::{family, sample};

/// Upper bounds (seconds) of the exec latency histogram's buckets.
const EXEC_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How an exec ended, for `kiln_sandbox_execs_total{status}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExecStatus {
    /// Exit code 0.
    Success,
    /// A non-zero exit code.
    Failure,
    /// Killed by a signal (not the timeout).
    Signal,
    /// Killed by its timeout.
    Timeout,
    /// Could not start, or the agent broke off.
    Error,
    /// The client left before the command ended (the command was killed).
    Abandoned,
}

impl ExecStatus {
    pub fn of(code: Option<i32>, timed_out: bool) -> Self {
        match (code, timed_out) {
            (_, true) => ExecStatus::Timeout,
            (Some(0), _) => ExecStatus::Success,
            (Some(_), _) => ExecStatus::Failure,
            (None, _) => ExecStatus::Signal,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Success => "success",
            ExecStatus::Failure => "failure",
            ExecStatus::Signal => "signal",
            ExecStatus::Timeout => "timeout",
            ExecStatus::Error => "error",
            ExecStatus::Abandoned => "abandoned",
        }
    }
}

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: [u64; EXEC_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = EXEC_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(EXEC_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += secs;
        self.count += 1;
    }

    /// `NAME_bucket` (cumulative), `NAME_sum` and `NAME_count`, labelled with the
    /// sandbox if there is one.
    fn render(&self, out: &mut String, name: &str, sandbox: Option<&str>) {
        let base: Vec<(&str, &str)> = sandbox.map(|id| ("sandbox", id)).into_iter().collect();
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = EXEC_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let mut labels = base.clone();
            labels.push(("le", &le));
            sample(out, &format!("{name}_bucket"), &labels, cumulative as f64);
        }
        sample(out, &format!("{name}_sum"), &base, self.sum);
        sample(out, &format!("{name}_count"), &base, self.count as f64);
    }
}

#[derive(Default)]
struct Inner {
    /// (route template, method, status) → requests.
    http: BTreeMap<(String, String, u16), u64>,
    /// (sandbox, status) → execs.
    execs: BTreeMap<(String, ExecStatus), u64>,
    exec_latency: Histogram,
    /// sandbox → its execs' latency.
    sandbox_latency: BTreeMap<String, Histogram>,
}

/// The server's own counters.
#[derive(Default)]
pub struct ServerMetrics {
    inner: Mutex<Inner>,
}

impl ServerMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One HTTP request answered; `route` is the matched route template.
    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        *self
            .lock()
            .http
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
    }

    /// One exec finished (its latency is recorded only when it ran to an exit).
    pub fn exec(&self, sandbox: &str, status: ExecStatus, took: Option<Duration>) {
        let mut m = self.lock();
        *m.execs.entry((sandbox.to_string(), status)).or_default() += 1;
        if let Some(d) = took {
            m.exec_latency.observe(d.as_secs_f64());
            let h = m.sandbox_latency.entry(sandbox.to_string()).or_default();
            h.observe(d.as_secs_f64());
        }
    }

    /// The exposition: server counters, then the sandboxes' samples. Exec counts of
    /// sandboxes that are gone are dropped here.
    pub fn render(&self, sandboxes: &[SandboxSample]) -> String {
        let mut out = String::new();
        let mut m = self.lock();
        let live: HashSet<&str> = sandboxes.iter().map(|s| s.id.as_str()).collect();
        m.execs.retain(|(id, _), _| live.contains(id.as_str()));
        m.sandbox_latency.retain(|id, _| live.contains(id.as_str()));

        family(
            &mut out,
            "kiln_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for ((route, method, status), n) in &m.http {
            let status = status.to_string();
            let labels = [
                ("route", route.as_str()),
                ("method", method.as_str()),
                ("status", status.as_str()),
            ];
            sample(&mut out, "kiln_http_requests_total", &labels, *n as f64);
        }

        family(&mut out, "kiln_sandbox_execs_total", "counter", "Commands run through this server, by sandbox and how they ended (success, failure, signal, timeout, error, abandoned).");
        for ((id, status), n) in &m.execs {
            sample(
                &mut out,
                "kiln_sandbox_execs_total",
                &[("sandbox", id), ("status", status.as_str())],
                *n as f64,
            );
        }

        family(
            &mut out,
            "kiln_exec_duration_seconds",
            "histogram",
            "Wall time of commands run through this server, from start to exit status.",
        );
        m.exec_latency
            .render(&mut out, "kiln_exec_duration_seconds", None);
        family(
            &mut out,
            "kiln_sandbox_exec_duration_seconds",
            "histogram",
            "The same per sandbox (dropped when the sandbox is gone).",
        );
        for (id, h) in &m.sandbox_latency {
            h.render(&mut out, "kiln_sandbox_exec_duration_seconds", Some(id));
        }
        drop(m);

        sandbox::render(&mut out, sandboxes);
        out
    }
}

#[cfg(test)]
mod tests;
