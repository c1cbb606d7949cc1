//! Headset emulation in process (off by default): the link a sensor would have on a headset —
//! bandwidth (a schedule of rates over time, so tests and benchmarks can drop and restore it),
//! latency, jitter and loss — and the sensor's compute time padded to what the bundle's profile
//! predicts. The kernel can shape bandwidth for real (network namespaces + `tc tbf`); this
//! shaper is for where it cannot, and is what the reports name when it was used.

use std::time::Duration;

use splitnets_camera::rig::SplitMix64;

/// A link to emulate.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEmulation {
    /// `(seconds since the sensor started, kilobits per second)`, ascending by time; the rate
    /// before the first step is unlimited.
    pub bandwidth_kbps: Vec<(f64, f64)>,
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per message (order is kept: a message never
    /// overtakes the one before it, as on a stream).
    pub jitter: Duration,
    /// Probability that a message is lost (never delivered; it still occupied the link).
    pub loss: f64,
    pub seed: u64,
}

impl LinkEmulation {
    /// Parses `RATE` or `T:RATE,T:RATE,...` (seconds : kbit/s), e.g. `0:2000,5:100,12:2000`.
    pub fn parse_bandwidth(text: &str) -> Result<Vec<(f64, f64)>, String> {
        let bad = |why: &str| format!("bandwidth schedule {text:?}: {why}");
        let mut steps = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (t, rate) = match part.split_once(':') {
                Some((t, r)) => (
                    t.trim()
                        .parse::<f64>()
                        .map_err(|_| bad("time is not a number"))?,
                    r,
                ),
                None if steps.is_empty() => (0.0, part),
                None => return Err(bad("steps after the first need `SECONDS:KBPS`")),
            };
            let rate = rate
                .trim()
                .parse::<f64>()
                .map_err(|_| bad("rate is not a number of kbit/s"))?;
            if !(t >= 0.0 && t.is_finite() && rate > 0.0 && rate.is_finite()) {
                return Err(bad("times must be ≥ 0 and rates > 0"));
            }
            if steps.last().is_some_and(|&(prev, _)| t <= prev) {
                return Err(bad("times must increase"));
            }
            steps.push((t, rate));
        }
        if steps.is_empty() {
            return Err(bad("no rate"));
        }
        Ok(steps)
    }

    /// The rate at `t` seconds since the start, bits per second (`None`: unlimited).
    pub fn rate_at(&self, t: f64) -> Option<f64> {
        self.bandwidth_kbps
            .iter()
            .rev()
            .find(|(start, _)| *start <= t)
            .map(|(_, kbps)| kbps * 1e3)
    }

    /// A one-line description for logs and reports.
    pub fn describe(&self) -> String {
        let bw: Vec<String> = self
            .bandwidth_kbps
            .iter()
            .map(|(t, r)| format!("{t}s:{r}kbit/s"))
            .collect();
        format!(
            "in-process shaper: bandwidth [{}], latency {} ms, jitter {} ms, loss {}",
            bw.join(" "),
            self.latency.as_secs_f64() * 1e3,
            self.jitter.as_secs_f64() * 1e3,
            self.loss
        )
    }
}

/// The shaper's state: when the emulated link is free again and when the last message arrived.
#[derive(Debug)]
pub struct Shaper {
    emulation: LinkEmulation,
    link_free_at: f64,
    last_delivery: f64,
    rng: SplitMix64,
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// Delivered this long after it was offered.
    Deliver(Duration),
    Lost,
}

impl Shaper {
    pub fn new(emulation: LinkEmulation) -> Self {
        let rng = SplitMix64::new(emulation.seed);
        Self {
            emulation,
            link_free_at: 0.0,
            last_delivery: 0.0,
            rng,
        }
    }

    /// A message of `bytes` offered at `now` (seconds since the start): it waits for the link,
    /// occupies it for `bytes × 8 / rate`, then travels `latency + jitter`.
    pub fn offer(&mut self, now: f64, bytes: usize) -> Fate {
        let start = now.max(self.link_free_at);
        let serialise = self
            .emulation
            .rate_at(start)
            .map_or(0.0, |rate| bytes as f64 * 8.0 / rate);
        self.link_free_at = start + serialise;
        if self.emulation.loss > 0.0 && self.rng.next_f64() < self.emulation.loss {
            return Fate::Lost;
        }
        let jitter = self.emulation.jitter.as_secs_f64() * self.rng.next_f64();
        let arrive = (self.link_free_at + self.emulation.latency.as_secs_f64() + jitter)
            .max(self.last_delivery);
        self.last_delivery = arrive;
        Fate::Deliver(Duration::from_secs_f64((arrive - now).max(0.0)))
    }
}

/// Blocks this (dedicated) thread until `at`: the kernel's sleep for all but the last 80 µs
/// (a thread's default timer slack is 50 µs), then a spin, so that delays of tens of
/// microseconds come out right. The spin costs up to 80 µs of CPU per message, with emulation
/// on only.
pub fn sleep_until(at: std::time::Instant) {
    const SPIN: Duration = Duration::from_micros(80);
    let now = std::time::Instant::now();
    if at > now + SPIN {
        std::thread::sleep(at - now - SPIN);
    }
    while std::time::Instant::now() < at {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(bw: &str, latency_ms: u64, jitter_ms: u64, loss: f64) -> LinkEmulation {
        LinkEmulation {
            bandwidth_kbps: LinkEmulation::parse_bandwidth(bw).unwrap(),
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss,
            seed: 7,
        }
    }

    #[test]
    fn sleep_until_never_wakes_early() {
        for us in [0u64, 15, 40, 300] {
            let at = std::time::Instant::now() + Duration::from_micros(us);
            sleep_until(at);
            assert!(std::time::Instant::now() >= at, "woke before {us} µs");
        }
    }

    #[test]
    fn schedules_parse_and_bad_ones_are_named() {
        assert_eq!(
            LinkEmulation::parse_bandwidth("0:2000, 5:100,12:2000").unwrap(),
            vec![(0.0, 2000.0), (5.0, 100.0), (12.0, 2000.0)]
        );
        assert_eq!(
            LinkEmulation::parse_bandwidth("64").unwrap(),
            vec![(0.0, 64.0)]
        );
        for bad in ["", "x", "0:0", "5:1,2:1", "1:2,3", "-1:5"] {
            let e = LinkEmulation::parse_bandwidth(bad).unwrap_err();
            assert!(e.contains("bandwidth schedule"), "{bad:?}: {e}");
        }
        let l = link("2:100", 0, 0, 0.0);
        assert_eq!(l.rate_at(1.0), None);
        assert_eq!(l.rate_at(2.5), Some(100e3));
    }

    #[test]
    fn messages_take_their_serialisation_time_and_queue_behind_each_other() {
        // 1000 bytes at 80 kbit/s: 0.1 s each, plus 5 ms latency.
        let mut s = Shaper::new(link("80", 5, 0, 0.0));
        let at = |f: Fate| match f {
            Fate::Deliver(d) => d.as_secs_f64(),
            Fate::Lost => f64::NAN,
        };
        assert!((at(s.offer(0.0, 1000)) - 0.105).abs() < 1e-9);
        // Offered at 0.05 s while the first still occupies the link until 0.1 s.
        assert!((at(s.offer(0.05, 1000)) - 0.155).abs() < 1e-9);
        // After a quiet spell the link is free again.
        assert!((at(s.offer(1.0, 1000)) - 0.105).abs() < 1e-9);
    }

    #[test]
    fn jitter_never_reorders_and_loss_is_about_its_rate() {
        let mut s = Shaper::new(link("100000", 1, 20, 0.1));
        let (mut last, mut lost) = (0.0f64, 0);
        for i in 0..10_000 {
            let now = i as f64 * 0.001;
            match s.offer(now, 100) {
                Fate::Deliver(d) => {
                    let arrive = now + d.as_secs_f64();
                    assert!(
                        arrive >= last - 1e-12,
                        "message {i} overtook its predecessor"
                    );
                    last = arrive;
                }
                Fate::Lost => lost += 1,
            }
        }
        assert!((800..1200).contains(&lost), "{lost} of 10000 lost at 10 %");
    }
}
