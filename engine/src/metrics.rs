//! Latency histograms and their report: hdrhistogram with 3 significant
//! digits, printed as p50/p90/p99/p99.9/max.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// A thread-safe latency histogram in microseconds.
#[derive(Debug)]
pub struct Latency {
    hist: Mutex<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram covering 1 µs to 1 hour.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self { hist: Mutex::new(hist) }
    }

    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.hist.lock() {
            let _ = h.record(us);
        }
    }

    /// A copy of the histogram.
    pub fn snapshot(&self) -> Histogram<u64> {
        match self.hist.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// `p50 … max` of a microsecond histogram, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} samples)",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_summarises() {
        let l = Latency::new();
        assert_eq!(summary(&l.snapshot()), "no samples");
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let h = l.snapshot();
        assert_eq!(h.len(), 100);
        let s = summary(&h);
        assert!(s.starts_with("p50 50.") && s.contains("max 100."), "{s}");
    }
}
