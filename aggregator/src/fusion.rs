//! Collects the views of each frame and hands complete (or expired) frames to the tail.
//!
//! A frame is fused when all views are in, when its deadline passes, or when too many frames are
//! pending (the oldest goes first). The deadline runs from the frame's first view's arrival, but
//! on a shared trigger never from before the frame is due on the trigger clock: a view sent
//! early (a broken or hostile sensor) cannot start the clock and make the other views late.
//! Views arriving for a frame already fused are late: dropped and counted. Frames belong to a
//! trigger epoch; when the fleet moves to a newer one, what is pending is fused with what it has
//! and the late-view memory starts afresh.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use splitnets_ops::{Phase, PhaseWatch};
use std::sync::Arc;

use splitnets_proto::codec::EncodedTensor;
use tokio::sync::mpsc;

use crate::fleet::{Fleet, unix_ms};
use crate::metrics::{AggregatorMetrics, ViewMetrics};

/// One view's validated, still encoded feature, as the link handed it over (the payload is a
/// slice of the receive buffer; the tail thread decodes it straight into the tail's input).
#[derive(Debug)]
pub struct ViewArrival {
    /// The trigger epoch of the stream it came on.
    pub epoch: u64,
    pub sequence: u64,
    pub view: u32,
    /// The bundle set's variant that made it (0 with a single bundle).
    pub variant: u32,
    pub capture_time_unix_ns: u64,
    /// Whether the capture time is plausible on the aggregator's clock (else it is kept out of
    /// the latency figures).
    pub capture_plausible: bool,
    pub sensor_ns: u64,
    pub queue_ns: u64,
    /// The frame's crossing tensors, still encoded (frame order; one for most bundles).
    pub tensors: Vec<EncodedTensor>,
    pub arrived: Instant,
    pub link_ns: u64,
    pub payload_bytes: u64,
    pub message_bytes: u64,
}

/// A frame ready for the tail.
#[derive(Debug)]
pub struct FusionJob {
    pub sequence: u64,
    /// The earliest plausible capture time of its views (0: none plausible).
    pub capture_time_unix_ns: u64,
    /// Views present, ascending.
    pub views: Vec<ViewArrival>,
    pub views_missing: Vec<u32>,
    pub wait_ns: u64,
    pub deadline_expired: bool,
}

#[derive(Debug)]
struct Pending {
    first_arrival: Instant,
    /// When the deadline starts counting: the first arrival, or the frame's due time on the
    /// trigger clock if that is later.
    clock_start: Instant,
    views: BTreeMap<u32, ViewArrival>,
}

/// Remembers recently fused sequences to recognise late views.
#[derive(Debug)]
struct RecentlyFused {
    order: VecDeque<u64>,
    set: HashSet<u64>,
    cap: usize,
}

impl RecentlyFused {
    fn insert(&mut self, s: u64) {
        if self.set.insert(s) {
            self.order.push_back(s);
            if self.order.len() > self.cap
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

#[derive(Debug)]
pub struct Fusion {
    views: u32,
    deadline: Duration,
    max_pending: usize,
    pending: HashMap<u64, Pending>,
    fused: RecentlyFused,
    view_metrics: Vec<ViewMetrics>,
    evicted: ::metrics::Counter,
    stale_epoch: ::metrics::Counter,
    /// The epoch of the frames pending now.
    epoch: u64,
    fleet: Option<Arc<Fleet>>,
}

impl Fusion {
    /// Fusion without metrics (unit tests).
    pub fn new(views: u32, deadline: Duration, max_pending: usize) -> Self {
        Self::with_metrics(
            views,
            deadline,
            max_pending,
            (0..views).map(|_| ViewMetrics::detached()).collect(),
            [::metrics::Counter::noop(), ::metrics::Counter::noop()],
            None,
        )
    }

    /// Fusion recording late, duplicate and evicted views on the aggregator's metrics.
    pub fn for_aggregator(
        views: u32,
        deadline: Duration,
        max_pending: usize,
        m: &AggregatorMetrics,
        fleet: Arc<Fleet>,
    ) -> Self {
        Self::with_metrics(
            views,
            deadline,
            max_pending,
            m.views.clone(),
            [m.frames_evicted.clone(), m.stale_epoch_views.clone()],
            Some(fleet),
        )
    }

    fn with_metrics(
        views: u32,
        deadline: Duration,
        max_pending: usize,
        view_metrics: Vec<ViewMetrics>,
        [evicted, stale_epoch]: [::metrics::Counter; 2],
        fleet: Option<Arc<Fleet>>,
    ) -> Self {
        Self {
            views,
            deadline,
            max_pending,
            view_metrics,
            evicted,
            stale_epoch,
            epoch: 0,
            fleet,
            pending: HashMap::new(),
            fused: RecentlyFused {
                order: VecDeque::new(),
                set: HashSet::new(),
                cap: 4096,
            },
        }
    }

    /// Adds a view; returns the frames that became ready.
    pub fn add(&mut self, a: ViewArrival) -> Vec<FusionJob> {
        let mut ready = Vec::new();
        if a.epoch < self.epoch {
            self.stale_epoch.increment(1);
            return ready;
        }
        if a.epoch > self.epoch {
            // A new trigger: what is pending belongs to the old one.
            ready = self.flush();
            self.fused.order.clear();
            self.fused.set.clear();
            self.epoch = a.epoch;
        }
        if self.fused.set.contains(&a.sequence) {
            self.view_metrics[a.view as usize].late_views.increment(1);
            tracing::debug!(
                sequence = a.sequence,
                view = a.view,
                "late view dropped: frame already fused"
            );
            return ready;
        }
        let seq = a.sequence;
        let clock_start = self
            .due_instant(seq)
            .map_or(a.arrived, |d| d.max(a.arrived));
        let p = self.pending.entry(seq).or_insert_with(|| Pending {
            first_arrival: a.arrived,
            clock_start,
            views: BTreeMap::new(),
        });
        if p.views.contains_key(&a.view) {
            self.view_metrics[a.view as usize]
                .duplicate_views
                .increment(1);
            return ready;
        }
        p.views.insert(a.view, a);
        if p.views.len() as u32 == self.views {
            ready.push(self.take(seq, false));
        }
        while self.pending.len() > self.max_pending {
            let oldest = self
                .pending
                .iter()
                .min_by_key(|(s, p)| (p.first_arrival, **s))
                .map(|(s, _)| *s)
                .expect("non-empty");
            self.evicted.increment(1);
            ready.push(self.take(oldest, true));
        }
        ready
    }

    /// When frame `seq` is due on the fleet's trigger clock, if it has one.
    fn due_instant(&self, seq: u64) -> Option<Instant> {
        let due_ms = self.fleet.as_ref()?.due_unix_ms(seq)?;
        let now_ms = unix_ms();
        Some(if due_ms > now_ms {
            Instant::now() + Duration::from_millis(due_ms - now_ms)
        } else {
            Instant::now()
                .checked_sub(Duration::from_millis(now_ms - due_ms))
                .unwrap_or_else(Instant::now)
        })
    }

    /// When the earliest pending frame expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.clock_start + self.deadline)
            .min()
    }

    /// Frames whose deadline has passed at `now`, oldest first.
    pub fn expire(&mut self, now: Instant) -> Vec<FusionJob> {
        let mut due: Vec<(Instant, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.clock_start + self.deadline <= now)
            .map(|(s, p)| (p.clock_start, *s))
            .collect();
        due.sort();
        due.into_iter().map(|(_, s)| self.take(s, true)).collect()
    }

    /// Everything still pending (shutdown).
    pub fn flush(&mut self) -> Vec<FusionJob> {
        self.expire(Instant::now() + self.deadline + Duration::from_secs(3600))
    }

    fn take(&mut self, seq: u64, expired: bool) -> FusionJob {
        let p = self.pending.remove(&seq).expect("pending frame");
        self.fused.insert(seq);
        if let Some(f) = &self.fleet
            && f.epoch() == self.epoch
        {
            f.fused(seq);
        }
        let views_missing = (0..self.views)
            .filter(|v| !p.views.contains_key(v))
            .collect();
        let views: Vec<ViewArrival> = p.views.into_values().collect();
        FusionJob {
            sequence: seq,
            capture_time_unix_ns: views
                .iter()
                .filter(|v| v.capture_plausible)
                .map(|v| v.capture_time_unix_ns)
                .min()
                .unwrap_or(0),
            wait_ns: p.first_arrival.elapsed().as_nanos() as u64,
            views,
            views_missing,
            deadline_expired: expired,
        }
    }
}

/// Wakes the fusion loop at a deadline within a few microseconds. tokio's timer wheel rounds a
/// deadline up to its next millisecond tick, which made a frame missing a view wait up to 1 ms
/// past its fusion deadline (the latency harness measured 3.02 ms of wait for a 2 ms deadline).
/// A thread of its own sleeps until shortly before the deadline and spins the rest; it costs
/// up to [`SPIN`] of CPU per expiry, and expiries happen only for frames missing a view.
#[derive(Debug)]
pub struct DeadlineTimer {
    set: std::sync::mpsc::Sender<Option<Instant>>,
    fired: Arc<tokio::sync::Notify>,
    armed: Option<Instant>,
}

const SPIN: Duration = Duration::from_micros(80);

impl DeadlineTimer {
    pub fn start() -> std::io::Result<Self> {
        let (set, rx) = std::sync::mpsc::channel::<Option<Instant>>();
        let fired = Arc::new(tokio::sync::Notify::new());
        let notify = fired.clone();
        std::thread::Builder::new()
            .name("fusion-deadline".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                let mut target: Option<Instant> = None;
                loop {
                    let Some(t) = target else {
                        match rx.recv() {
                            Ok(t) => target = t,
                            Err(_) => return,
                        }
                        continue;
                    };
                    let sleep = t.saturating_duration_since(Instant::now());
                    if sleep > SPIN {
                        match rx.recv_timeout(sleep - SPIN) {
                            Ok(new) => {
                                target = new;
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => return,
                            Err(RecvTimeoutError::Timeout) => {}
                        }
                    }
                    while Instant::now() < t {
                        std::hint::spin_loop();
                    }
                    target = None;
                    notify.notify_one();
                }
            })?;
        Ok(Self {
            set,
            fired,
            armed: None,
        })
    }

    /// Arms the timer for `at`. Only an earlier deadline than the one armed wakes the thread
    /// (two wake-ups per frame cost the aggregator ~3 % of its CPU): a deadline armed for a
    /// frame fused meanwhile fires at worst once, finds nothing due, and the loop re-arms.
    fn arm(&mut self, at: Option<Instant>) {
        if let Some(t) = at
            && self.armed.is_none_or(|a| t < a)
        {
            self.armed = Some(t);
            let _ = self.set.send(Some(t));
        }
    }
}

/// Runs the fusion loop until `arrivals` closes or the aggregator reaches [`Phase::Flushing`],
/// then fuses what is pending.
pub async fn run_fusion(
    mut fusion: Fusion,
    mut arrivals: mpsc::Receiver<ViewArrival>,
    mut phase: PhaseWatch,
    pending_gauge: ::metrics::Gauge,
    jobs: mpsc::Sender<FusionJob>,
    mut timer: DeadlineTimer,
) {
    loop {
        timer.arm(fusion.next_deadline());
        let fired = timer.fired.clone();
        let ready = tokio::select! {
            a = arrivals.recv() => match a {
                Some(a) => fusion.add(a),
                None => break,
            },
            () = fired.notified() => {
                // The timer disarmed itself when it fired.
                timer.armed = None;
                fusion.expire(Instant::now())
            }
            () = phase.wait_for(Phase::Flushing) => break,
        };
        for job in ready {
            if jobs.send(job).await.is_err() {
                return;
            }
        }
        pending_gauge.set(fusion.pending.len() as f64);
    }
    for job in fusion.flush() {
        let _ = jobs.send(job).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(seq: u64, view: u32) -> ViewArrival {
        ViewArrival {
            epoch: 0,
            sequence: seq,
            view,
            variant: 0,
            capture_time_unix_ns: 0,
            capture_plausible: false,
            sensor_ns: 0,
            queue_ns: 0,
            tensors: vec![EncodedTensor::empty()],
            arrived: Instant::now(),
            link_ns: 0,
            payload_bytes: 0,
            message_bytes: 0,
        }
    }

    #[tokio::test]
    async fn the_deadline_timer_fires_never_early_and_can_be_rearmed() {
        let mut t = DeadlineTimer::start().unwrap();
        let at = Instant::now() + Duration::from_millis(3);
        t.arm(Some(at));
        // A later deadline does not move it (the loop re-arms after a stale expiry).
        t.arm(Some(at + Duration::from_secs(3600)));
        tokio::time::timeout(Duration::from_secs(5), t.fired.notified())
            .await
            .expect("the timer fired");
        assert!(Instant::now() >= at, "fired before its deadline");
        // An earlier deadline replaces a later one.
        t.armed = None;
        t.arm(Some(Instant::now() + Duration::from_secs(3600)));
        let at = Instant::now() + Duration::from_millis(2);
        t.arm(Some(at));
        tokio::time::timeout(Duration::from_secs(5), t.fired.notified())
            .await
            .expect("the earlier deadline fired");
        assert!(Instant::now() >= at, "fired before its deadline");
    }

    #[test]
    fn fuses_when_all_views_arrive_in_any_order() {
        let mut f = Fusion::new(3, Duration::from_secs(10), 8);
        assert!(f.add(arrival(1, 2)).is_empty());
        assert!(f.add(arrival(1, 0)).is_empty());
        let jobs = f.add(arrival(1, 1));
        assert_eq!(jobs.len(), 1);
        let views: Vec<u32> = jobs[0].views.iter().map(|v| v.view).collect();
        assert_eq!(views, vec![0, 1, 2]);
        assert!(jobs[0].views_missing.is_empty());
        // A late duplicate of a fused frame is dropped.
        assert!(f.add(arrival(1, 1)).is_empty());
    }

    #[test]
    fn deadline_fuses_with_the_views_present() {
        let mut f = Fusion::new(4, Duration::from_millis(0), 8);
        assert!(f.add(arrival(7, 3)).is_empty());
        let jobs = f.expire(Instant::now() + Duration::from_millis(1));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].views_missing, vec![0, 1, 2]);
        assert!(jobs[0].deadline_expired);
    }

    #[test]
    fn too_many_pending_evicts_the_oldest() {
        let mut f = Fusion::new(2, Duration::from_secs(10), 2);
        assert!(f.add(arrival(1, 0)).is_empty());
        assert!(f.add(arrival(2, 0)).is_empty());
        let jobs = f.add(arrival(3, 0));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].sequence, 1);
    }
}
