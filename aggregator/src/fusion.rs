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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

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
    /// When the frame was fused: the tail measures its hand-off from here.
    pub fused_at: Instant,
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
            fused_at: Instant::now(),
            views,
            views_missing,
            deadline_expired: expired,
        }
    }
}

/// Fusion where the views arrive: each stream's task adds its view and hands a ready frame to
/// the tail itself, and the deadline thread expires frames the same way. A fusion task between
/// them cost a hand-off, i.e. a wake-up, per view (counted by the latency harness).
///
/// The state sits behind an async mutex that is held while a ready frame goes into the tail's
/// bounded queue: frames reach the tail in the order they were fused, and a full queue holds
/// back the streams (and through TCP the sensors) as the fusion task's await did.
#[derive(Debug)]
pub struct FusionStage {
    state: tokio::sync::Mutex<StageState>,
    clock: Arc<DeadlineClock>,
    pending_gauge: ::metrics::Gauge,
}

#[derive(Debug)]
struct StageState {
    fusion: Fusion,
    /// The tail's queue; `None` once flushed at shutdown (the tail thread then ends).
    jobs: Option<mpsc::Sender<FusionJob>>,
}

impl FusionStage {
    /// Starts the deadline thread; ready frames go to `jobs`.
    pub fn start(
        fusion: Fusion,
        jobs: mpsc::Sender<FusionJob>,
        pending_gauge: ::metrics::Gauge,
    ) -> std::io::Result<Arc<Self>> {
        let (clock, wake) = DeadlineClock::new();
        let stage = Arc::new(Self {
            state: tokio::sync::Mutex::new(StageState {
                fusion,
                jobs: Some(jobs),
            }),
            clock: clock.clone(),
            pending_gauge,
        });
        // The thread holds the stage weakly: dropping the stage disconnects `wake` and ends it.
        let weak = Arc::downgrade(&stage);
        spawn_deadline_thread(clock, wake, move || {
            if let Some(stage) = weak.upgrade() {
                stage.expire_blocking();
            }
        })?;
        Ok(stage)
    }

    fn after_change(&self, st: &StageState) {
        self.clock.set(st.fusion.next_deadline());
        self.pending_gauge.set(st.fusion.pending.len() as f64);
    }

    /// Adds a view and hands what became ready to the tail. False once the stage is flushed
    /// (shutting down) or the tail is gone: the view was not taken.
    pub async fn add(&self, a: ViewArrival) -> bool {
        let mut st = self.state.lock().await;
        let Some(jobs) = st.jobs.clone() else {
            return false;
        };
        let ready = st.fusion.add(a);
        let mut delivered = true;
        for job in ready {
            delivered &= jobs.send(job).await.is_ok();
        }
        self.after_change(&st);
        delivered
    }

    /// The deadline thread's work: fuse the frames whose deadline passed.
    fn expire_blocking(&self) {
        let mut st = self.state.blocking_lock();
        let ready = st.fusion.expire(Instant::now());
        if let Some(jobs) = st.jobs.clone() {
            for job in ready {
                let _ = jobs.blocking_send(job);
            }
        }
        self.after_change(&st);
    }

    /// Shutdown: fuses what is pending with the views it has, hands it to the tail and closes
    /// the tail's queue. Views arriving later are refused.
    pub async fn flush(&self) {
        let mut st = self.state.lock().await;
        let ready = st.fusion.flush();
        if let Some(jobs) = st.jobs.take() {
            for job in ready {
                let _ = jobs.send(job).await;
            }
        }
        self.after_change(&st);
    }
}

/// The earliest pending deadline, shared with the deadline thread through atomics, so that
/// moving it later (the common case: a frame fused with all its views before its deadline) never
/// wakes the thread, and a deadline that no longer exists is never spun for.
///
/// Why a thread at all: tokio's timer wheel rounds a deadline up to its next millisecond tick,
/// which made a frame missing a view wait up to 1 ms past its fusion deadline (the latency
/// harness measured 3.02 ms of wait for a 2 ms deadline). The thread sleeps until shortly before
/// the deadline and spins the rest ([`SPIN`]); spinning for deadlines of frames already fused
/// cost ~0.04 ms of CPU per frame before the thread re-checked the deadline first.
#[derive(Debug)]
struct DeadlineClock {
    base: Instant,
    /// Earliest deadline, nanoseconds after `base` plus one; 0: none.
    earliest: AtomicU64,
    /// What the thread sleeps toward, encoded the same way; 0: parked until woken.
    sleeping_until: AtomicU64,
    wake: std::sync::mpsc::Sender<()>,
}

const SPIN: Duration = Duration::from_micros(80);

impl DeadlineClock {
    fn new() -> (Arc<Self>, std::sync::mpsc::Receiver<()>) {
        let (wake, rx) = std::sync::mpsc::channel();
        let clock = Self {
            base: Instant::now(),
            earliest: AtomicU64::new(0),
            sleeping_until: AtomicU64::new(0),
            wake,
        };
        (Arc::new(clock), rx)
    }

    fn encode(&self, t: Option<Instant>) -> u64 {
        t.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
                + 1
        })
    }

    fn decode(&self, v: u64) -> Option<Instant> {
        (v != 0).then(|| self.base + Duration::from_nanos(v - 1))
    }

    /// Publishes the earliest deadline; wakes the thread only if it would sleep past it.
    fn set(&self, at: Option<Instant>) {
        let e = self.encode(at);
        self.earliest.store(e, SeqCst);
        if e == 0 {
            return;
        }
        // SeqCst on both sides: either this load sees the thread's new target, or the
        // thread's re-check after publishing it sees `e`.
        let s = self.sleeping_until.load(SeqCst);
        if s == 0 || e < s {
            let _ = self.wake.send(());
        }
    }
}

/// The deadline thread: calls `fire` once the earliest deadline published on `clock` has passed
/// (never early). Ends when the clock's wake-up sender is gone.
fn spawn_deadline_thread(
    clock: Arc<DeadlineClock>,
    woken: std::sync::mpsc::Receiver<()>,
    mut fire: impl FnMut() + Send + 'static,
) -> std::io::Result<()> {
    // Weak: the thread must not keep the wake-up sender alive, it ends on its disconnection.
    let clock = Arc::downgrade(&clock);
    std::thread::Builder::new()
        .name("fusion-deadline".into())
        .spawn(move || {
            use std::sync::mpsc::RecvTimeoutError;
            let drain = || while woken.try_recv().is_ok() {};
            // The deadline fired last: if `fire` left it published, it is not fired again (a
            // busy loop) but waited on as "none" until another is published.
            let mut fired_for = 0;
            loop {
                let Some(c) = clock.upgrade() else {
                    return;
                };
                let mut e = c.earliest.load(SeqCst);
                if e == fired_for {
                    e = 0;
                }
                c.sleeping_until.store(e, SeqCst);
                let now_published = c.earliest.load(SeqCst);
                if now_published != e && now_published != fired_for {
                    continue;
                }
                let target = c.decode(e);
                drop(c);
                let Some(t) = target else {
                    match woken.recv() {
                        Ok(()) => drain(),
                        Err(_) => return,
                    }
                    continue;
                };
                let now = Instant::now();
                if t > now + SPIN {
                    match woken.recv_timeout(t - now - SPIN) {
                        Ok(()) => drain(),
                        Err(RecvTimeoutError::Disconnected) => return,
                        // Re-read: the frame may have been fused meanwhile.
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    continue;
                }
                while Instant::now() < t {
                    std::hint::spin_loop();
                }
                fired_for = e;
                fire();
            }
        })?;
    Ok(())
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

    #[test]
    fn the_deadline_thread_fires_never_early_and_only_for_a_deadline_still_published() {
        let (fired_tx, fired) = std::sync::mpsc::channel::<Instant>();
        let (clock, wake) = DeadlineClock::new();
        spawn_deadline_thread(clock.clone(), wake, move || {
            let _ = fired_tx.send(Instant::now());
        })
        .unwrap();
        let at = Instant::now() + Duration::from_millis(3);
        clock.set(Some(at));
        let when = fired
            .recv_timeout(Duration::from_secs(5))
            .expect("the timer fired");
        assert!(when >= at, "fired before its deadline");
        // Moved later before it is due (its frame fused): nothing fires at the old deadline.
        let stale = Instant::now() + Duration::from_millis(5);
        clock.set(Some(stale));
        clock.set(Some(stale + Duration::from_secs(3600)));
        assert!(
            fired.recv_timeout(Duration::from_millis(50)).is_err(),
            "fired for a stale deadline"
        );
        // An earlier deadline wakes the sleeping thread.
        let at = Instant::now() + Duration::from_millis(2);
        clock.set(Some(at));
        let when = fired
            .recv_timeout(Duration::from_secs(5))
            .expect("the earlier deadline fired");
        assert!(when >= at, "fired before its deadline");
        // None published: parked; a new deadline wakes it.
        clock.set(None);
        let at = Instant::now() + Duration::from_millis(2);
        clock.set(Some(at));
        assert!(fired.recv_timeout(Duration::from_secs(5)).unwrap() >= at);
    }

    /// The stage end to end: a complete frame goes to the tail's queue at once, a frame missing
    /// a view when its deadline passes (from the deadline thread), and after the flush views
    /// are refused and the queue is closed.
    #[tokio::test]
    async fn the_stage_fuses_on_arrival_and_on_the_deadline_thread() {
        let (jobs, mut ready) = mpsc::channel(8);
        let stage = FusionStage::start(
            Fusion::new(2, Duration::from_millis(5), 8),
            jobs,
            ::metrics::Gauge::noop(),
        )
        .unwrap();
        assert!(stage.add(arrival(1, 0)).await);
        assert!(stage.add(arrival(1, 1)).await);
        let job = ready.try_recv().expect("complete frame handed over");
        assert_eq!(
            (job.sequence, job.views.len(), job.deadline_expired),
            (1, 2, false)
        );
        assert!(stage.add(arrival(2, 1)).await);
        let job = tokio::time::timeout(Duration::from_secs(5), ready.recv())
            .await
            .expect("the deadline fused it")
            .unwrap();
        assert_eq!(
            (
                job.sequence,
                job.views_missing.clone(),
                job.deadline_expired
            ),
            (2, vec![0], true)
        );
        assert!(stage.add(arrival(3, 0)).await);
        stage.flush().await;
        assert_eq!(ready.recv().await.map(|j| j.sequence), Some(3), "flushed");
        assert!(ready.recv().await.is_none(), "queue closed");
        assert!(!stage.add(arrival(4, 0)).await, "refused after the flush");
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
