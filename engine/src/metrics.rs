//! Latency histograms and their report: hdrhistogram with 3 significant
//! digits, printed as p50/p90/p99/p99.9/max.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// A thread-safe latency histogram in microseconds.
#[derive(Debug)]
pub struct Latency {
    samples: Mutex<Samples>,
}

/// A download's samples: kept as they are while few (a small file has
/// one), as a histogram once many. A histogram per download, even one that
/// grows with its largest sample, zeroed tens of KiB for each of a bulk
/// fetch's thousands of files (2 % of the fetching ring's CPU).
#[derive(Debug)]
enum Samples {
    Few(Vec<u64>),
    Many(Histogram<u64>),
}

/// Samples kept one by one before they go into a histogram.
const FEW: usize = 64;

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// No samples yet; they range over 1 µs to 1 hour.
    pub fn new() -> Self {
        Self { samples: Mutex::new(Samples::Few(Vec::new())) }
    }

    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        let mut samples = self.locked();
        match &mut *samples {
            Samples::Few(few) if few.len() < FEW => few.push(us),
            Samples::Few(few) => {
                let mut h = histogram_of(few);
                let _ = h.record(us);
                *samples = Samples::Many(h);
            }
            Samples::Many(h) => {
                let _ = h.record(us);
            }
        }
    }

    /// The samples so far as a histogram.
    pub fn snapshot(&self) -> Histogram<u64> {
        match &*self.locked() {
            Samples::Few(few) => histogram_of(few),
            Samples::Many(h) => h.clone(),
        }
    }

    /// [`percentiles_us`] of the samples so far, without copying a
    /// histogram (a bulk fetch asks once per file): the same figures a
    /// histogram of them gives.
    pub fn percentiles_us(&self) -> Vec<(&'static str, u64)> {
        let few = match &*self.locked() {
            Samples::Many(h) => return percentiles_us(h),
            Samples::Few(few) if few.is_empty() => return Vec::new(),
            Samples::Few(few) => {
                let mut sorted = few.clone();
                sorted.sort_unstable();
                sorted
            }
        };
        // As `Histogram::value_at_quantile` picks: the sample at rank
        // ceil(q × n) (at least 1), reported as the highest value its
        // bucket holds.
        let n = few.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            equivalent().highest_equivalent(few[rank - 1])
        };
        report(at, at(1.0), n as u64)
    }

    /// Adds the samples so far to `into`.
    pub fn add_to(&self, into: &mut Histogram<u64>) -> Result<(), hdrhistogram::AdditionError> {
        match &*self.locked() {
            Samples::Few(few) => {
                for &us in few {
                    into.record(us)
                        .map_err(|_| hdrhistogram::AdditionError::OtherAddendValueExceedsRange)?;
                }
                Ok(())
            }
            Samples::Many(h) => into.add(h),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An empty histogram for 1 µs to 1 hour. It grows with the largest
/// sample instead of being sized for an hour up front (188 KiB zeroed).
fn empty() -> Histogram<u64> {
    Histogram::new(3).expect("valid histogram precision")
}

fn histogram_of(samples: &[u64]) -> Histogram<u64> {
    let mut h = empty();
    for &us in samples {
        let _ = h.record(us);
    }
    h
}

/// A histogram used only for its buckets' bounds, which depend on its
/// precision alone.
fn equivalent() -> &'static Histogram<u64> {
    static H: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    H.get_or_init(empty)
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

/// The percentiles of a microsecond histogram as a JSON-friendly map, in µs.
pub fn percentiles_us(h: &Histogram<u64>) -> Vec<(&'static str, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    if h.len() == 1 {
        // Every quantile is the one sample (a small file's one piece): no
        // walk over the buckets, four times per file of a bulk fetch.
        let v = h.max();
        return report(|_| v, v, 1);
    }
    report(|q| h.value_at_quantile(q), h.max(), h.len())
}

/// The percentiles reported, `at(q)` each, then the max and the count.
fn report(at: impl Fn(f64) -> u64, max: u64, count: u64) -> Vec<(&'static str, u64)> {
    vec![
        ("p50", at(0.50)),
        ("p90", at(0.90)),
        ("p99", at(0.99)),
        ("p99.9", at(0.999)),
        ("max", max),
        ("count", count),
    ]
}

/// The histogram in HdrHistogram's percentile-distribution text format
/// (`.hgrm`), values in milliseconds, as plotting tools read it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    use std::fmt::Write;
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 { format!("{:.2}", 1.0 / (1.0 - q)) } else { "inf".into() };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {:10} {:>14}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inv
        );
    }
    let mean = h.mean() / 1000.0;
    let sd = h.stdev() / 1000.0;
    let _ = writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {sd:12.3}]");
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    out
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
        let text = hgrm(&h);
        assert!(text.contains("Total count    =          100"), "{text}");
        assert!(text.lines().count() > 10);
        assert_eq!(percentiles_us(&h).last(), Some(&("count", 100)));
    }

    #[test]
    fn a_few_samples_give_what_their_histogram_gives() {
        for n in [1u64, 2, 3, 7, 10, 63, 64, 65, 200] {
            let l = Latency::new();
            for i in 0..n {
                // Spread over several buckets, out of order.
                l.record(Duration::from_micros(1 + (i * 7919) % 90_000));
            }
            assert_eq!(l.percentiles_us(), percentiles_us(&l.snapshot()), "{n} samples");
            let mut all = empty();
            l.add_to(&mut all).unwrap();
            assert_eq!(all.len(), n);
            assert_eq!(percentiles_us(&all), percentiles_us(&l.snapshot()));
        }
        assert!(Latency::new().percentiles_us().is_empty());
    }

    #[test]
    fn one_sample_is_every_percentile_as_the_walk_finds_it() {
        for us in [1, 999, 2048, 123_456, 3_600_000_000] {
            let l = Latency::new();
            l.record(Duration::from_micros(us));
            let mut h = l.snapshot();
            let short = percentiles_us(&h);
            // The same histogram with a second, equal sample takes the
            // general path: the values agree.
            h.record(us).unwrap();
            let walked: Vec<_> =
                percentiles_us(&h).into_iter().filter(|(k, _)| *k != "count").collect();
            assert_eq!(short[..5], walked[..], "{us} µs");
            assert_eq!(short[5], ("count", 1));
        }
    }
}
