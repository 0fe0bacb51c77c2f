//! kubetrail's own telemetry: a registry of counters and gauges rendered in Prometheus text
//! format, and the per-component set every source and output gets, so series names stay the
//! same everywhere (`kubetrail_component_records_in_total{component="..."}` and so on);
//! readiness (`health`) and the HTTP endpoint that serves both (`server`).

pub mod health;
pub mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
}

type Labels = Vec<(String, String)>;

/// The registry. Registering the same name and labels twice returns the same series.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, Labels), Metric>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn key(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
        (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Counter {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        match s
            .entry(Self::key(name, labels))
            .or_insert_with(|| Metric::Counter(Counter::default()))
        {
            Metric::Counter(c) => c.clone(),
            // A name registered as a gauge elsewhere: hand out a detached counter rather than panic.
            Metric::Gauge(_) => Counter::default(),
        }
    }

    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Gauge {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        match s
            .entry(Self::key(name, labels))
            .or_insert_with(|| Metric::Gauge(Gauge::default()))
        {
            Metric::Gauge(g) => g.clone(),
            Metric::Counter(_) => Gauge::default(),
        }
    }

    /// The current value of a series, if registered (for tests and readiness).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
        let s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        s.get(&Self::key(name, labels)).map(|m| match m {
            Metric::Counter(c) => c.get() as i64,
            Metric::Gauge(g) => g.get(),
        })
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut last_name = "";
        for ((name, labels), metric) in s.iter() {
            if name != last_name {
                let kind = match metric {
                    Metric::Counter(_) => "counter",
                    Metric::Gauge(_) => "gauge",
                };
                let _ = writeln!(out, "# TYPE {name} {kind}");
                last_name = name;
            }
            out.push_str(name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{k}=\"{v}\"");
                }
                out.push('}');
            }
            let v = match metric {
                Metric::Counter(c) => c.get() as i64,
                Metric::Gauge(g) => g.get(),
            };
            let _ = writeln!(out, " {v}");
        }
        out
    }
}

/// The series every component has.
#[derive(Clone, Debug, Default)]
pub struct ComponentMetrics {
    pub records_in: Counter,
    pub bytes_in: Counter,
    pub records_out: Counter,
    pub bytes_out: Counter,
    pub duplicates: Counter,
    pub filtered: Counter,
    pub dropped: Counter,
    pub retried: Counter,
    pub failed: Counter,
    pub errors: Counter,
}

impl ComponentMetrics {
    pub fn register(m: &Metrics, component: &str) -> ComponentMetrics {
        let l = [("component", component)];
        ComponentMetrics {
            records_in: m.counter("kubetrail_component_records_in_total", &l),
            bytes_in: m.counter("kubetrail_component_bytes_in_total", &l),
            records_out: m.counter("kubetrail_component_records_out_total", &l),
            bytes_out: m.counter("kubetrail_component_bytes_out_total", &l),
            duplicates: m.counter("kubetrail_component_duplicates_total", &l),
            filtered: m.counter("kubetrail_component_filtered_total", &l),
            dropped: m.counter("kubetrail_component_dropped_total", &l),
            retried: m.counter("kubetrail_component_retried_total", &l),
            failed: m.counter("kubetrail_component_failed_total", &l),
            errors: m.counter("kubetrail_component_errors_total", &l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        let c = m.counter("x_total", &[("component", "a\"b")]);
        c.add(3);
        m.gauge("depth", &[]).set(-2);
        assert_eq!(m.counter("x_total", &[("component", "a\"b")]).get(), 3);
        let text = m.render();
        assert!(
            text.contains("# TYPE x_total counter\nx_total{component=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE depth gauge\ndepth -2\n"), "{text}");
    }
}
