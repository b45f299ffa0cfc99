//! Log-linear latency histogram: 32 sub-buckets per power of two (about 3%
//! resolution), a fixed array, no allocation per sample, mergeable.

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; 64 * SUB],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    (((shift + 1) as usize) << SUB_BITS) | ((v >> shift) as usize & (SUB - 1))
}

/// The middle of bucket `i`.
fn value(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) - 1;
    let low = ((SUB + (i & (SUB - 1))) as u64) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Hist {
    /// Records `n` samples of `v` (nanoseconds).
    pub fn record_n(&mut self, v: u64, n: u64) {
        self.counts[index(v)] += n;
        self.total += n;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let target = ((q * self.total as f64).ceil() as u64).clamp(1, self.total.max(1));
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target && c > 0 {
                return value(i).min(self.max);
            }
        }
        0
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_close() {
        for v in [
            0u64,
            1,
            31,
            32,
            63,
            64,
            1000,
            123_456,
            9_999_999,
            u64::MAX / 3,
        ] {
            let m = value(index(v));
            assert!(m.abs_diff(v) <= v / 32 + 1, "{v} -> {m}");
        }
        let mut h = Hist::default();
        for v in 1..=100u64 {
            h.record_n(v * 1000, 1);
        }
        assert!(h.quantile(0.5).abs_diff(50_000) < 2_000);
        assert!(h.quantile(0.99).abs_diff(99_000) < 4_000);
    }
}
