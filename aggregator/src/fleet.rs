//! What the aggregator knows about the fleet of sensors as a whole: the trigger epoch their
//! sequence numbers count from, the frame rate, how far fusion has got (the watermark), and the
//! credit it grants to sensors in max-rate mode. Shared by every link stream and fusion.
//!
//! Frame identity is `(epoch, sequence)`: a fleet restarted with a new trigger sends a newer
//! epoch, and the aggregator follows it at once (pending frames of the old epoch are fused with
//! what they have, the late-view memory is cleared), so the new frames 0, 1, ... fuse again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// In max-rate mode a sensor may run this many frames ahead of the fleet's fusion watermark:
/// enough to keep every stage busy, few enough that all views of a frame arrive together.
pub const CREDIT_WINDOW: u64 = 4;

/// Frames accepted ahead of where the fleet is, beyond which a sequence is implausible: on the
/// trigger clock, this much time ahead (clock skew between hosts); without a clock, this many
/// frames ahead of the fusion watermark.
const CLOCK_LEAD: Duration = Duration::from_millis(250);
const WATERMARK_LEAD_FRAMES: u64 = 4 * CREDIT_WINDOW;
/// Capture times further than this from the aggregator's clock are implausible (kept out of
/// the latency metrics).
const TIMESTAMP_PAST: Duration = Duration::from_secs(30);
const TIMESTAMP_FUTURE: Duration = Duration::from_secs(1);

/// The fleet's shared state.
#[derive(Debug)]
pub struct Fleet {
    epoch_ms: AtomicU64,
    fps_bits: AtomicU64,
    /// One past the highest sequence fused in the current epoch.
    next_sequence: AtomicU64,
    credit: tokio::sync::watch::Sender<u64>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a frame's sequence number is plausible for the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Plausible,
    /// From an older trigger epoch than the fleet's.
    StaleEpoch,
    /// Further ahead than the trigger clock or the watermark allows.
    TooFarAhead {
        limit: u64,
    },
}

pub fn unix_ms() -> u64 {
    splitnets_ops::unix_ns() / 1_000_000
}

impl Fleet {
    pub fn new() -> Self {
        Self {
            epoch_ms: AtomicU64::new(0),
            fps_bits: AtomicU64::new(0f64.to_bits()),
            next_sequence: AtomicU64::new(0),
            credit: tokio::sync::watch::Sender::new(CREDIT_WINDOW),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch_ms.load(Ordering::Acquire)
    }

    pub fn fps(&self) -> f64 {
        f64::from_bits(self.fps_bits.load(Ordering::Relaxed))
    }

    pub fn next_sequence(&self) -> u64 {
        self.next_sequence.load(Ordering::Acquire)
    }

    /// A sensor's hello: adopts a newer epoch (and its frame rate). Returns false for an epoch
    /// older than the fleet's.
    pub fn join(&self, epoch_ms: u64, fps: f64) -> bool {
        let current = self.epoch_ms.fetch_max(epoch_ms, Ordering::AcqRel);
        if epoch_ms < current {
            return false;
        }
        if epoch_ms > current {
            // A new trigger: sequence numbers start again.
            self.next_sequence.store(0, Ordering::Release);
            self.credit.send_replace(CREDIT_WINDOW);
            tracing::info!(epoch_ms, fps, "new trigger epoch");
        }
        if fps.is_finite() && fps >= 0.0 {
            self.fps_bits.store(fps.to_bits(), Ordering::Relaxed);
        }
        true
    }

    /// Where a paced fleet on a shared trigger is now: the frame being captured.
    fn clock_frame(&self, now_ms: u64) -> Option<u64> {
        let (epoch, fps) = (self.epoch(), self.fps());
        (epoch > 0 && fps > 0.0 && now_ms >= epoch)
            .then(|| ((now_ms - epoch) as f64 * fps / 1000.0) as u64)
    }

    /// When frame `sequence` is due on the trigger clock, if the fleet has one (Unix ms).
    pub fn due_unix_ms(&self, sequence: u64) -> Option<u64> {
        let (epoch, fps) = (self.epoch(), self.fps());
        (epoch > 0 && fps > 0.0).then(|| epoch + (sequence as f64 * 1000.0 / fps) as u64)
    }

    /// Checks a frame of `epoch` with `sequence` against the fleet.
    pub fn check(&self, epoch: u64, sequence: u64) -> SequenceCheck {
        if epoch < self.epoch() {
            return SequenceCheck::StaleEpoch;
        }
        let limit = match self.clock_frame(unix_ms()) {
            Some(now) => now + 2 + (self.fps() * CLOCK_LEAD.as_secs_f64()).ceil() as u64,
            None if self.epoch() > 0 && self.fps() > 0.0 => {
                // The trigger is still in the future: only the first frames can be due.
                2 + (self.fps() * CLOCK_LEAD.as_secs_f64()).ceil() as u64
            }
            None => self.next_sequence() + WATERMARK_LEAD_FRAMES,
        };
        if sequence > limit {
            SequenceCheck::TooFarAhead { limit }
        } else {
            SequenceCheck::Plausible
        }
    }

    /// Fusion finished frame `sequence` of the current epoch: the watermark and the credit move.
    pub fn fused(&self, sequence: u64) {
        let next = sequence + 1;
        if self.next_sequence.fetch_max(next, Ordering::AcqRel) < next {
            self.credit.send_if_modified(|c| {
                let raise = next + CREDIT_WINDOW > *c;
                if raise {
                    *c = next + CREDIT_WINDOW;
                }
                raise
            });
        }
    }

    /// The credit granted to max-rate sensors: frames below it may be sent.
    pub fn credit(&self) -> tokio::sync::watch::Receiver<u64> {
        self.credit.subscribe()
    }
}

/// Whether a capture time is plausible on the aggregator's clock (else it is kept out of the
/// latency metrics: a sensor's broken clock must not skew them for good).
pub fn plausible_capture(capture_unix_ns: u64, now_unix_ns: u64) -> bool {
    capture_unix_ns + TIMESTAMP_PAST.as_nanos() as u64 >= now_unix_ns
        && capture_unix_ns <= now_unix_ns + TIMESTAMP_FUTURE.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_epoch_restarts_the_sequence_and_older_ones_are_stale() {
        let f = Fleet::new();
        assert!(f.join(1000, 0.0));
        f.fused(41);
        assert_eq!(f.next_sequence(), 42);
        assert_eq!(*f.credit().borrow(), 42 + CREDIT_WINDOW);
        assert!(f.join(2000, 0.0));
        assert_eq!(f.next_sequence(), 0);
        assert!(!f.join(1000, 0.0));
        assert_eq!(f.check(1000, 0), SequenceCheck::StaleEpoch);
        assert_eq!(f.check(2000, 3), SequenceCheck::Plausible);
        assert!(matches!(
            f.check(2000, 900),
            SequenceCheck::TooFarAhead { .. }
        ));
    }

    #[test]
    fn on_the_trigger_clock_only_frames_about_due_are_plausible() {
        let f = Fleet::new();
        let epoch = unix_ms() - 10_000; // 10 s ago at 30 fps: frame ~300 is due
        assert!(f.join(epoch, 30.0));
        assert_eq!(f.check(epoch, 299), SequenceCheck::Plausible);
        assert_eq!(
            f.check(epoch, 5),
            SequenceCheck::Plausible,
            "late is fusion's call"
        );
        assert!(matches!(
            f.check(epoch, 340),
            SequenceCheck::TooFarAhead { .. }
        ));
    }

    #[test]
    fn capture_times_far_from_now_are_implausible() {
        let now = 1_700_000_000_000_000_000u64;
        assert!(plausible_capture(now - 1_000_000, now));
        assert!(!plausible_capture(0, now));
        assert!(!plausible_capture(now + 5_000_000_000, now));
    }
}
