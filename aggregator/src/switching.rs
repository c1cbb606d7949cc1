//! Live split switching: with a bundle set loaded, the aggregator estimates each link's capacity
//! from the frames it receives and moves the whole fleet to another variant, at a frame boundary
//! a few frames ahead, when the current one no longer fits the links at the fleet's frame rate
//! (and back when a better one fits again, after a hold: hysteresis).
//!
//! Capacity estimate: a frame of `b` bytes whose link time exceeds the link's floor (the least
//! link time seen lately: propagation and software overhead) by `t` spent `t` on the wire, so
//! the link carried at most `8 b / t` bits per second for it. A frame that queued behind the one
//! before it (an overloaded link) was on the wire only since that one arrived, so `t` is at most
//! the gap between their arrivals: the estimate stays the link's rate while it is overloaded. A
//! fast link with spare capacity shows `t` ≈ 0, an estimate capped at [`FAST_LINK_BPS`]. The fleet's capacity is
//! the slowest view's median over a window.
//!
//! [`Controller`] is pure (time is passed in) and unit-tested; [`run_controller`] drives it.

use std::collections::VecDeque;

/// Estimates above this mean "no limit measurable from these frames".
pub const FAST_LINK_BPS: f64 = 1e9;

/// When to switch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwitchPolicy {
    /// Switch down when the current variant would use more than this share of the estimated
    /// capacity...
    pub down_utilisation: f64,
    /// ...for this long (seconds).
    pub down_after: f64,
    /// The variant switched down to uses at most this share (the best such; else the smallest).
    pub target_utilisation: f64,
    /// Switch up to a better variant once it would use at most this share...
    pub up_utilisation: f64,
    /// ...for this long (seconds).
    pub up_after: f64,
    /// Samples older than this are forgotten (seconds).
    pub window: f64,
    /// The floor (least link time) is the least over this long (seconds).
    pub floor_window: f64,
    /// Fewer samples than this in the window: no estimate.
    pub min_samples: usize,
    /// After a switch down, the capacity measured then caps the estimate for this long
    /// (seconds): a shaper with a token bucket (`tc tbf`) passes a lighter load with no delay,
    /// so a narrow link looks fast again as soon as the load fits. When a switch back up fails
    /// (down again soon after), the hold doubles, up to `ceiling_hold_max`.
    pub ceiling_hold: f64,
    pub ceiling_hold_max: f64,
}

impl Default for SwitchPolicy {
    fn default() -> Self {
        Self {
            down_utilisation: 0.9,
            down_after: 0.4,
            target_utilisation: 0.75,
            up_utilisation: 0.6,
            up_after: 2.0,
            window: 1.0,
            floor_window: 10.0,
            min_samples: 5,
            ceiling_hold: 5.0,
            ceiling_hold_max: 60.0,
        }
    }
}

#[derive(Debug, Default)]
struct ViewLink {
    /// (time, link seconds) of recent frames, for the floor.
    floor: VecDeque<(f64, f64)>,
    /// (time, capacity estimate bits/s) of frames of the current variant.
    capacity: VecDeque<(f64, f64)>,
    /// The latest frame: (its sequence, its capture time, seconds, on the caller's clock).
    latest: Option<(u64, f64)>,
    /// When the previous frame arrived.
    previous_arrival: Option<f64>,
}

/// A decision to switch.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub from: usize,
    pub to: usize,
    /// The fleet's estimated capacity per link when deciding, bits per second.
    pub capacity_bps: f64,
    /// The current variant's load on it (0.9 = 90 %).
    pub utilisation: f64,
    pub reason: &'static str,
}

/// One received frame, as the controller sees it.
#[derive(Debug, Clone, Copy)]
pub struct FrameSeen {
    pub view: usize,
    /// The variant that made it.
    pub variant: usize,
    /// Bytes on the wire.
    pub bytes: usize,
    /// From written into the stream to received, seconds.
    pub link_seconds: f64,
    pub sequence: u64,
    /// When it was captured (seconds on the capture clock).
    pub capture_seconds: f64,
}

#[derive(Debug)]
pub struct Controller {
    /// Bytes one view's frame of each variant occupies on the link, best variant first.
    variant_bytes: Vec<usize>,
    policy: SwitchPolicy,
    current: usize,
    views: Vec<ViewLink>,
    over_since: Option<f64>,
    /// (candidate, since when it has fitted).
    fits_since: Option<(usize, f64)>,
    /// The capacity measured at the last switch down, and until when it caps the estimate.
    ceiling: Option<(f64, f64)>,
    hold: f64,
    last_up: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

impl Controller {
    pub fn new(variant_bytes: Vec<usize>, views: usize, policy: SwitchPolicy) -> Self {
        Self {
            variant_bytes,
            policy,
            current: 0,
            views: (0..views).map(|_| ViewLink::default()).collect(),
            over_since: None,
            fits_since: None,
            ceiling: None,
            hold: policy.ceiling_hold,
            last_up: None,
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// A frame received at `now`.
    pub fn observe(&mut self, now: f64, f: FrameSeen) {
        let FrameSeen {
            view,
            variant,
            bytes,
            link_seconds,
            sequence,
            capture_seconds,
        } = f;
        let p = self.policy;
        let Some(v) = self.views.get_mut(view) else {
            return;
        };
        if v.latest.is_none_or(|(s, _)| sequence >= s) {
            v.latest = Some((sequence, capture_seconds));
        }
        while v
            .floor
            .front()
            .is_some_and(|&(t, _)| t < now - p.floor_window)
        {
            v.floor.pop_front();
        }
        // Keep the floor deque monotone (a later, lower sample makes earlier ones irrelevant).
        while v.floor.back().is_some_and(|&(_, l)| l >= link_seconds) {
            v.floor.pop_back();
        }
        v.floor.push_back((now, link_seconds));
        let gap = v.previous_arrival.map_or(f64::INFINITY, |p| now - p);
        v.previous_arrival = Some(now);
        if variant != self.current {
            return; // frames in flight across a switch say nothing about the new variant
        }
        let floor = v.floor.front().map_or(link_seconds, |&(_, l)| l);
        // A frame that queued behind the previous one was on the wire only from the previous
        // one's arrival: the gap between arrivals is then its own transfer time.
        let on_wire = (link_seconds - floor).min(gap);
        let estimate = if on_wire > 0.0 {
            (bytes as f64 * 8.0 / on_wire).min(FAST_LINK_BPS)
        } else {
            FAST_LINK_BPS
        };
        v.capacity.push_back((now, estimate));
    }

    /// The slowest link's median capacity over the window (`None`: too few samples).
    pub fn capacity_bps(&mut self, now: f64) -> Option<f64> {
        let p = self.policy;
        let mut slowest: Option<f64> = None;
        for v in &mut self.views {
            while v.capacity.front().is_some_and(|&(t, _)| t < now - p.window) {
                v.capacity.pop_front();
            }
            if v.capacity.len() < p.min_samples {
                continue;
            }
            let m = median(v.capacity.iter().map(|&(_, c)| c).collect())?;
            slowest = Some(slowest.map_or(m, |s: f64| s.min(m)));
        }
        slowest
    }

    /// Bits per second one link carries for `variant` at `fps`.
    pub fn load_bps(&self, variant: usize, fps: f64) -> f64 {
        self.variant_bytes[variant] as f64 * 8.0 * fps
    }

    /// Where the fleet's cameras are now: the latest frame seen plus the frames captured since
    /// (`now_capture_clock` on the capture times' clock).
    pub fn camera_frame_now(&self, now_capture_clock: f64, fps: f64) -> u64 {
        self.views
            .iter()
            .filter_map(|v| v.latest)
            .map(|(s, at)| s + ((now_capture_clock - at).max(0.0) * fps) as u64)
            .max()
            .unwrap_or(0)
    }

    /// Whether to switch now. A switch clears the estimates: the new variant is judged on its
    /// own frames.
    pub fn decide(&mut self, now: f64, fps: f64) -> Option<Switch> {
        if fps <= 0.0 || self.variant_bytes.len() < 2 {
            return None;
        }
        let p = self.policy;
        let Some(capacity) = self.capacity_bps(now) else {
            self.over_since = None;
            self.fits_since = None;
            return None;
        };
        let util = |c: &Self, v: usize| c.load_bps(v, fps) / capacity;
        let current_util = util(self, self.current);
        // What a better variant is judged against: the estimate, capped by a recent overload.
        let up_capacity = match self.ceiling {
            Some((c, until)) if now < until => capacity.min(c),
            _ => capacity,
        };
        let mut decision = None;
        if current_util > p.down_utilisation {
            self.fits_since = None;
            let since = *self.over_since.get_or_insert(now);
            if now - since >= p.down_after {
                let to = (0..self.variant_bytes.len())
                    .filter(|&v| v != self.current)
                    .find(|&v| util(self, v) <= p.target_utilisation)
                    .unwrap_or_else(|| {
                        (0..self.variant_bytes.len())
                            .min_by_key(|&v| self.variant_bytes[v])
                            .expect("variants")
                    });
                if to != self.current && self.variant_bytes[to] < self.variant_bytes[self.current] {
                    decision = Some((to, "link over capacity"));
                }
            }
        } else {
            self.over_since = None;
            // The best variant better than the current one that fits comfortably.
            let candidate = (0..self.current)
                .find(|&v| self.load_bps(v, fps) / up_capacity <= p.up_utilisation);
            match (candidate, self.fits_since) {
                (None, _) => self.fits_since = None,
                (Some(c), Some((prev, since))) if prev == c => {
                    if now - since >= p.up_after {
                        decision = Some((c, "capacity recovered"));
                    }
                }
                (Some(c), _) => self.fits_since = Some((c, now)),
            }
        }
        let (to, reason) = decision?;
        if self.variant_bytes[to] < self.variant_bytes[self.current] {
            // Down: a switch up that failed soon after doubles the hold.
            if self
                .last_up
                .is_some_and(|t| now - t <= 2.0 * (p.up_after + p.down_after + p.window))
            {
                self.hold = (self.hold * 2.0).min(p.ceiling_hold_max);
            }
            self.ceiling = Some((capacity, now + self.hold));
        } else {
            self.last_up = Some(now);
        }
        let s = Switch {
            from: self.current,
            to,
            capacity_bps: capacity,
            utilisation: current_util,
            reason,
        };
        self.current = to;
        self.over_since = None;
        self.fits_since = None;
        for v in &mut self.views {
            v.capacity.clear();
        }
        Some(s)
    }
}

/// What the fleet is told to run: `variant` from frame `from_sequence` on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchCommand {
    pub variant: u32,
    pub from_sequence: u64,
}

/// A switch decided and not yet seen complete by the tail.
#[derive(Debug, Clone, Copy)]
pub struct Issued {
    pub at: std::time::Instant,
    pub from: u32,
    pub to: u32,
}

/// The switching state the link, the tail and the controller task share (bundle sets only).
#[derive(Debug)]
pub struct Switching {
    pub controller: std::sync::Mutex<Controller>,
    pub command: tokio::sync::watch::Sender<SwitchCommand>,
    pub issued: std::sync::Mutex<Option<Issued>>,
    /// Each variant's link budget per view, bytes per second (for the dashboard).
    pub budgets_bytes_per_second: Vec<f64>,
}

impl Switching {
    pub fn new(
        variant_bytes: Vec<usize>,
        views: usize,
        budgets_bytes_per_second: Vec<f64>,
    ) -> Self {
        Self {
            controller: std::sync::Mutex::new(Controller::new(
                variant_bytes,
                views,
                SwitchPolicy::default(),
            )),
            command: tokio::sync::watch::Sender::new(SwitchCommand::default()),
            issued: std::sync::Mutex::new(None),
            budgets_bytes_per_second,
        }
    }

    /// A frame arrived at `received_unix_ns` (the link's hot path: one short lock).
    pub fn observe(&self, received_unix_ns: u64, frame: FrameSeen) {
        self.controller
            .lock()
            .expect("switch controller lock")
            .observe(received_unix_ns as f64 * 1e-9, frame);
    }
}

/// How often the controller looks at the estimates.
pub const DECISION_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// Decides switches until the aggregator drains; a switch is announced to every stream with a
/// boundary about 100 ms (at least 2 frames) ahead of where the cameras are.
pub async fn run_controller(
    sw: std::sync::Arc<Switching>,
    fleet: std::sync::Arc<crate::fleet::Fleet>,
    metrics: crate::metrics::AggregatorMetrics,
    dashboard: crate::dashboard::DashboardTap,
    mut phase: splitnets_ops::PhaseWatch,
) {
    let mut tick = tokio::time::interval(DECISION_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = phase.wait_for(splitnets_ops::Phase::Draining) => return,
        }
        let fps = fleet.fps();
        let now = splitnets_ops::unix_ns() as f64 * 1e-9;
        let (decision, at) = {
            let mut c = sw.controller.lock().expect("switch controller lock");
            let d = c.decide(now, fps);
            (d, c.camera_frame_now(now, fps))
        };
        let Some(s) = decision else { continue };
        let lead = ((fps * 0.1).ceil() as u64).max(2);
        let command = SwitchCommand {
            variant: s.to as u32,
            from_sequence: at + lead,
        };
        *sw.issued.lock().expect("issued lock") = Some(Issued {
            at: std::time::Instant::now(),
            from: s.from as u32,
            to: s.to as u32,
        });
        sw.command.send_replace(command);
        metrics.split_switches.increment(1);
        metrics.split_variant.set(s.to as f64);
        tracing::info!(
            from = s.from,
            to = s.to,
            from_sequence = command.from_sequence,
            capacity_kbps = s.capacity_bps / 1e3,
            utilisation = s.utilisation,
            reason = s.reason,
            "split switch"
        );
        dashboard.event(crate::dashboard::DashEvent::SplitSwitch {
            from: s.from as u32,
            to: s.to as u32,
            reason: s.reason,
            capacity_bps: s.capacity_bps,
            budget_bytes_per_second: sw.budgets_bytes_per_second[s.to],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` of frames at 30 fps from 2 views over links of `bps` (a queue per link,
    /// +1 ms propagation) with the controller's current variant; returns the switches decided.
    fn drive(
        c: &mut Controller,
        t: &mut f64,
        seconds: f64,
        bps: f64,
        seq: &mut u64,
        link_free: &mut [f64; 2],
    ) -> Vec<Switch> {
        let mut out = Vec::new();
        let end = *t + seconds;
        while *t < end {
            let v = c.current();
            let bytes = c.variant_bytes[v];
            for (view, free) in link_free.iter_mut().enumerate() {
                let done = t.max(*free) + bytes as f64 * 8.0 / bps;
                *free = done;
                let f = FrameSeen {
                    view,
                    variant: v,
                    bytes,
                    link_seconds: done + 0.001 - *t,
                    sequence: *seq,
                    capture_seconds: *t,
                };
                c.observe(done + 0.001, f);
            }
            *seq += 1;
            if let Some(s) = c.decide(*t, 30.0) {
                out.push(s);
            }
            *t += 1.0 / 30.0;
        }
        out
    }

    #[test]
    fn a_bandwidth_drop_switches_down_and_recovery_switches_back_after_the_hold() {
        // 830, 236 and 133 bytes per frame: 199, 57 and 32 kbit/s at 30 fps.
        let mut c = Controller::new(vec![830, 236, 133], 2, SwitchPolicy::default());
        let (mut t, mut seq, mut q) = (0.0, 0, [0.0; 2]);
        assert!(
            drive(&mut c, &mut t, 3.0, 1e6, &mut seq, &mut q).is_empty(),
            "1 Mbit/s fits"
        );
        let down = drive(&mut c, &mut t, 3.0, 120e3, &mut seq, &mut q);
        assert_eq!(down.len(), 1, "{down:?}");
        assert_eq!(
            (down[0].from, down[0].to),
            (0, 1),
            "the best variant that fits 120 kbit/s"
        );
        assert!((down[0].capacity_bps - 120e3).abs() < 1e3, "{down:?}");
        let up = drive(&mut c, &mut t, 1.5, 1e6, &mut seq, &mut q);
        assert!(up.is_empty(), "no switch back before the hold: {up:?}");
        // The capacity measured at the drop caps the estimate for 5 s, then the hold of 2 s.
        let up = drive(&mut c, &mut t, 5.0, 1e6, &mut seq, &mut q);
        assert_eq!(up.len(), 1, "{up:?}");
        assert_eq!((up[0].from, up[0].to), (1, 0));
    }

    #[test]
    fn a_token_bucket_that_looks_fast_under_a_light_load_does_not_make_it_flap() {
        let mut c = Controller::new(vec![830, 236, 133], 2, SwitchPolicy::default());
        let (mut t, mut seq, mut q) = (0.0, 0, [0.0; 2]);
        drive(&mut c, &mut t, 3.0, 1e6, &mut seq, &mut q);
        let down = drive(&mut c, &mut t, 3.0, 120e3, &mut seq, &mut q);
        assert_eq!(down.len(), 1, "{down:?}");
        // tbf passes the lighter variant at once: the link looks fast, but it is not.
        let early = drive(&mut c, &mut t, 2.0, 1e9, &mut seq, &mut q);
        assert!(early.is_empty(), "no probe within the hold: {early:?}");
        // After the hold (5 s) one probe goes up; it fails and comes down again...
        let probe = drive(&mut c, &mut t, 4.0, 1e9, &mut seq, &mut q);
        assert_eq!(probe.len(), 1, "{probe:?}");
        let back = drive(&mut c, &mut t, 2.0, 120e3, &mut seq, &mut q);
        assert_eq!(back.len(), 1, "{back:?}");
        // ...and the next probe waits twice as long.
        let quiet = drive(&mut c, &mut t, 8.0, 1e9, &mut seq, &mut q);
        assert!(quiet.is_empty(), "the hold doubled: {quiet:?}");
        let later = drive(&mut c, &mut t, 4.0, 1e9, &mut seq, &mut q);
        assert_eq!(later.len(), 1, "a probe after the doubled hold: {later:?}");
    }

    #[test]
    fn a_link_too_narrow_for_every_variant_gets_the_smallest_and_no_flapping() {
        let mut c = Controller::new(vec![830, 236, 133], 2, SwitchPolicy::default());
        let (mut t, mut seq, mut q) = (0.0, 0, [0.0; 2]);
        let s = drive(&mut c, &mut t, 5.0, 20e3, &mut seq, &mut q);
        assert_eq!(s.last().map(|s| s.to), Some(2), "{s:?}");
        assert!(s.len() <= 2, "{s:?}");
        assert!(
            drive(&mut c, &mut t, 5.0, 20e3, &mut seq, &mut q).is_empty(),
            "stays put"
        );
    }

    #[test]
    fn the_switch_boundary_is_where_the_cameras_are_not_where_the_frames_are() {
        let mut c = Controller::new(vec![100, 50], 2, SwitchPolicy::default());
        // The last frame that arrived was captured 0.5 s ago (it queued on a slow link).
        let f = FrameSeen {
            view: 0,
            variant: 0,
            bytes: 100,
            link_seconds: 0.5,
            sequence: 300,
            capture_seconds: 9.5,
        };
        c.observe(10.0, f);
        assert_eq!(c.camera_frame_now(10.0, 30.0), 315);
        assert_eq!(c.decide(10.0, 30.0), None, "too few samples");
    }
}
