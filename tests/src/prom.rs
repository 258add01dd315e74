//! `/metrics` scraped over HTTP and parsed with `prometheus-parse`, a
//! parser independent of NOVAS's renderer, plus a strict line check the
//! lenient parser does not make (it skips lines it cannot read).

use std::collections::HashMap;

use prometheus_parse::{LineInfo, Scrape, Value};

use crate::http;

/// A parsed scrape.
pub struct Metrics {
    pub scrape: Scrape,
    pub text: String,
}

/// `GET /metrics` on `addr`; panics unless it is 200 and valid text format.
pub fn scrape(addr: &str, bearer: Option<&str>) -> Metrics {
    let r = http::get(addr, "/metrics", bearer)
        .unwrap_or_else(|e| panic!("GET /metrics on {addr}: {e}"));
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    parse(&r.body)
}

/// Parses exposition text; panics on any line that is not a comment, a
/// blank or a well-formed sample with a numeric value.
pub fn parse(text: &str) -> Metrics {
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Empty => {}
            LineInfo::Sample { value, .. } => {
                let ok = value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN";
                assert!(ok, "sample with a non-numeric value: {line:?}");
            }
            LineInfo::Ignored => {
                assert!(
                    line.starts_with('#'),
                    "unparseable line in /metrics: {line:?}"
                );
            }
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("prometheus-parse failed: {e}\n{text}"));
    assert!(!scrape.samples.is_empty(), "no samples in\n{text}");
    Metrics {
        scrape,
        text: text.to_string(),
    }
}

impl Metrics {
    /// The value of the single sample `name` whose labels include all of
    /// `labels`; `None` when there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
                _ => None,
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().copied()
    }

    /// Like [`Self::get`], panicking (with the text) when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{}", self.text))
    }

    /// Declared `# TYPE`s, by family name.
    pub fn types(&self) -> HashMap<String, String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect()
    }

    /// Buckets of histogram `name` as (upper bound, cumulative count).
    pub fn histogram(&self, name: &str) -> Vec<(f64, f64)> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find_map(|s| match &s.value {
                Value::Histogram(b) => Some(b.iter().map(|h| (h.less_than, h.count)).collect()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name} in\n{}", self.text))
    }
}
