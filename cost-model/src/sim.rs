//! What-if simulation of a split deployment: a discrete-event model of N sensors, their links
//! and the aggregator, frame by frame.
//!
//! The closed-form [`crate::split::evaluate`] adds stage times; it cannot say what happens when
//! sensors wait for each other, when links share a bus, when the aggregator falls behind or
//! when its frames wait on the slowest of N views. This simulation runs the same stages as
//! servers with queues, on the trigger clock the daemons use:
//!
//! 1. every sensor captures frame `n` at `n / fps`; a sensor still busy with an earlier frame
//!    skips the frame (as the camera thread does);
//! 2. the head runs on the sensor's own compute (or, to model several processes on one host,
//!    on a shared pool of cores);
//! 3. the feature frame queues for its link (bounded queue: a full one drops the frame), is
//!    transmitted (`bytes × 8 / bandwidth`, on the camera's own link or on one shared bus) and
//!    arrives after the link's latency;
//! 4. the aggregator's receive path handles the arriving views one at a time and fuses a frame when all views
//!    are in or when its fusion deadline, counted from the first view's arrival, passes;
//! 5. the tail runs on one thread, frames in the order they became ready;
//! 6. end to end = tail finished + publication overhead − capture time.
//!
//! Stage durations are distributions ([`Dist`]): a fixed time from the cost model, a log-normal
//! around it, or samples measured on a real run. No I/O; deterministic for a seed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use crate::profile::LinkTopology;

/// A stage's duration, seconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    Fixed(f64),
    /// Log-normal with this median and shape (σ of the logarithm).
    LogNormal {
        median: f64,
        sigma: f64,
    },
    /// Drawn uniformly from measured samples (bootstrap).
    Empirical(Vec<f64>),
}

impl Dist {
    fn sample(&self, rng: &mut Rng) -> f64 {
        match self {
            Dist::Fixed(s) => *s,
            Dist::LogNormal { median, sigma } => median * (sigma * rng.normal()).exp(),
            Dist::Empirical(v) if v.is_empty() => 0.0,
            Dist::Empirical(v) => v[(rng.uniform() * v.len() as f64) as usize % v.len()],
        }
    }

    /// The distribution's median (for reports).
    pub fn median(&self) -> f64 {
        match self {
            Dist::Fixed(s) => *s,
            Dist::LogNormal { median, .. } => *median,
            Dist::Empirical(v) => {
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(0.0)
            }
        }
    }
}

/// Where the compute runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Each sensor computes on its own hardware, the aggregator on its own (a headset).
    Dedicated,
    /// Every process shares this many cores (several daemons on one test machine).
    SharedHost { cores: usize },
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub sensors: u32,
    pub fps: f64,
    pub frames: u64,
    pub seed: u64,
    pub placement: Placement,
    /// Sensor: capture and preprocess, head, encode (the camera thread).
    pub sensor: Dist,
    /// Bytes one view's feature frame occupies on the link (message and transport overhead).
    pub message_bytes: u64,
    pub links: LinkTopology,
    pub bandwidth_bits_per_second: f64,
    /// After transmission until the aggregator has the message (propagation and the transport
    /// stacks of both ends), per message.
    pub link_latency: Dist,
    /// Frames a sensor may queue for its link; beyond that, frames are dropped.
    pub sensor_queue: usize,
    /// Aggregator work per arriving view (receive, validate, hand over to fusion) on its
    /// receive path, which handles views one at a time: with N views arriving together the
    /// last waits for the N − 1 before it.
    pub receive: Dist,
    /// Tail per fused frame: `tail_base + views × tail_per_view` (dequantize, recover, fuse…).
    pub tail_base: Dist,
    pub tail_per_view: Dist,
    /// Tail finished → prediction published.
    pub publish: Dist,
    pub fusion_deadline_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `v` (sorted in place).
    pub fn of(v: &mut [f64]) -> Self {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Self {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p999: at(99.9),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimReport {
    pub sensors: u32,
    pub fps: f64,
    /// Capture → prediction published, seconds, over fused frames.
    pub end_to_end: Percentiles,
    /// First view arrived → frame fused (waiting for the slowest view), seconds.
    pub fusion_wait: Percentiles,
    pub frames_fused: u64,
    /// Fused from fewer than all views (the deadline passed).
    pub frames_degraded: u64,
    /// Frames the cameras skipped (sensor busy) or the sensors dropped (link queue full).
    pub view_frames_dropped: u64,
    /// Views that arrived after their frame was fused.
    pub late_views: u64,
    /// Busy time / simulated time of the busiest link (per-camera links) or of the bus.
    pub link_utilization: f64,
    /// Busy time / simulated time of the aggregator's tail thread.
    pub tail_utilization: f64,
    /// Busy time / (simulated time × servers) of the busiest compute resource: a sensor, the
    /// aggregator, its receive path, or the shared cores.
    pub compute_utilization: f64,
}

impl SimReport {
    /// Whether the system keeps up: nothing dropped, late or degraded, and no resource busier
    /// than `max_utilization`.
    pub fn sustains(&self, max_utilization: f64) -> bool {
        self.view_frames_dropped == 0
            && self.late_views == 0
            && self.frames_degraded == 0
            && self.link_utilization <= max_utilization
            && self.tail_utilization <= max_utilization
            && self.compute_utilization <= max_utilization
    }
}

/// SplitMix64 and Box–Muller: enough randomness for jitter, and no dependency.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Trigger {
        frame: u64,
    },
    /// A compute job finished on pool `pool`.
    ComputeDone {
        pool: usize,
        job: Job,
    },
    TxDone {
        link: usize,
        frame: u64,
    },
    Arrive {
        frame: u64,
    },
    Deadline {
        frame: u64,
    },
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Head { sensor: u32, frame: u64 },
    Receive { frame: u64 },
    Tail { frame: u64, views: u32 },
}

struct Timed {
    t: f64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    // Earliest first (BinaryHeap is a max-heap); ties in insertion order.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

/// A FIFO server with `servers` identical units; tracks busy time.
struct Pool {
    free: usize,
    servers: usize,
    waiting: VecDeque<(Job, f64)>,
    busy_seconds: f64,
}
impl Pool {
    fn new(servers: usize) -> Self {
        Self {
            free: servers,
            servers,
            waiting: VecDeque::new(),
            busy_seconds: 0.0,
        }
    }
}

struct FrameState {
    capture: f64,
    first_arrival: Option<f64>,
    views: u32,
    fused: bool,
}

struct Link {
    busy_until: f64,
    queued: usize,
    busy_seconds: f64,
    /// Frames waiting for this link.
    waiting: VecDeque<u64>,
}

struct Sim<'a> {
    c: &'a SimConfig,
    rng: Rng,
    now: f64,
    seq: u64,
    events: BinaryHeap<Timed>,
    pools: Vec<Pool>,
    sensor_busy: Vec<bool>,
    links: Vec<Link>,
    frames: Vec<FrameState>,
    tail_busy: bool,
    tail_busy_seconds: f64,
    ready: VecDeque<u64>,
    e2e: Vec<f64>,
    waits: Vec<f64>,
    degraded: u64,
    dropped: u64,
    late: u64,
}

impl Sim<'_> {
    fn at(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.events.push(Timed {
            t,
            seq: self.seq,
            ev,
        });
    }

    /// Pool of a job: sensor `k`'s own, or the aggregator's (index = sensors); with a shared
    /// host, pool 0 for everything except the tail thread's ordering (kept by `tail_busy`).
    fn pool_of(&self, job: &Job) -> usize {
        match (self.c.placement, job) {
            // The aggregator's receive path handles views one at a time, in arrival order.
            (_, Job::Receive { .. }) => self.pools.len() - 1,
            (Placement::SharedHost { .. }, _) => 0,
            (Placement::Dedicated, Job::Head { sensor, .. }) => *sensor as usize,
            (Placement::Dedicated, _) => self.c.sensors as usize,
        }
    }

    fn submit(&mut self, job: Job) {
        let dur = match job {
            Job::Head { .. } => self.c.sensor.sample(&mut self.rng),
            Job::Receive { .. } => self.c.receive.sample(&mut self.rng),
            Job::Tail { views, .. } => {
                let d = self.c.tail_base.sample(&mut self.rng)
                    + f64::from(views) * self.c.tail_per_view.sample(&mut self.rng);
                self.tail_busy_seconds += d;
                d
            }
        };
        let p = self.pool_of(&job);
        if self.pools[p].free > 0 {
            self.pools[p].free -= 1;
            self.pools[p].busy_seconds += dur;
            let t = self.now + dur;
            self.at(t, Ev::ComputeDone { pool: p, job });
        } else {
            self.pools[p].waiting.push_back((job, dur));
        }
    }

    fn release(&mut self, p: usize) {
        if let Some((job, dur)) = self.pools[p].waiting.pop_front() {
            self.pools[p].busy_seconds += dur;
            let t = self.now + dur;
            self.at(t, Ev::ComputeDone { pool: p, job });
        } else {
            self.pools[p].free += 1;
        }
    }

    fn link_of(&self, sensor: u32) -> usize {
        match self.c.links {
            LinkTopology::Parallel => sensor as usize,
            LinkTopology::SharedBus => 0,
        }
    }

    fn transmit_next(&mut self, l: usize) {
        if self.links[l].busy_until > self.now {
            return;
        }
        if let Some(frame) = self.links[l].waiting.pop_front() {
            let tx = self.c.message_bytes as f64 * 8.0 / self.c.bandwidth_bits_per_second;
            self.links[l].busy_until = self.now + tx;
            self.links[l].busy_seconds += tx;
            let t = self.now + tx;
            self.at(t, Ev::TxDone { link: l, frame });
        }
    }

    fn fuse(&mut self, frame: u64) {
        let f = &mut self.frames[frame as usize];
        f.fused = true;
        if f.views < self.c.sensors {
            self.degraded += 1;
        }
        self.waits
            .push(self.now - f.first_arrival.unwrap_or(self.now));
        self.ready.push_back(frame);
        self.start_tail();
    }

    fn start_tail(&mut self) {
        if self.tail_busy {
            return;
        }
        if let Some(frame) = self.ready.pop_front() {
            self.tail_busy = true;
            let views = self.frames[frame as usize].views;
            self.submit(Job::Tail { frame, views });
        }
    }

    fn handle(&mut self, ev: Ev) {
        let c = self.c;
        match ev {
            Ev::Trigger { frame } => {
                for k in 0..c.sensors {
                    if self.sensor_busy[k as usize] {
                        self.dropped += 1;
                    } else {
                        self.sensor_busy[k as usize] = true;
                        self.submit(Job::Head { sensor: k, frame });
                    }
                }
                if frame + 1 < c.frames {
                    self.at((frame + 1) as f64 / c.fps, Ev::Trigger { frame: frame + 1 });
                }
            }
            Ev::ComputeDone { pool, job } => {
                self.release(pool);
                match job {
                    Job::Head { sensor, frame } => {
                        self.sensor_busy[sensor as usize] = false;
                        let l = self.link_of(sensor);
                        let limit = c.sensor_queue.max(1) * self.links_share();
                        let link = &mut self.links[l];
                        if link.queued >= limit {
                            self.dropped += 1;
                        } else {
                            link.queued += 1;
                            link.waiting.push_back(frame);
                            self.transmit_next(l);
                        }
                    }
                    Job::Receive { frame } => {
                        let f = &mut self.frames[frame as usize];
                        if f.fused {
                            self.late += 1;
                        } else {
                            f.views += 1;
                            let first = f.first_arrival.is_none();
                            if first {
                                f.first_arrival = Some(self.now);
                            }
                            let complete = f.views == c.sensors;
                            if first {
                                let due = self.now + c.fusion_deadline_seconds;
                                self.at(due, Ev::Deadline { frame });
                            }
                            if complete {
                                self.fuse(frame);
                            }
                        }
                    }
                    Job::Tail { frame, .. } => {
                        self.tail_busy = false;
                        let publish = c.publish.sample(&mut self.rng);
                        let capture = self.frames[frame as usize].capture;
                        self.e2e.push(self.now + publish - capture);
                        self.start_tail();
                    }
                }
            }
            Ev::TxDone { link, frame } => {
                self.links[link].queued -= 1;
                let lat = c.link_latency.sample(&mut self.rng);
                self.at(self.now + lat, Ev::Arrive { frame });
                self.transmit_next(link);
            }
            Ev::Arrive { frame, .. } => self.submit(Job::Receive { frame }),
            Ev::Deadline { frame } => {
                if !self.frames[frame as usize].fused {
                    self.fuse(frame);
                }
            }
        }
    }

    /// A shared bus holds every sensor's queue.
    fn links_share(&self) -> usize {
        match self.c.links {
            LinkTopology::Parallel => 1,
            LinkTopology::SharedBus => self.c.sensors as usize,
        }
    }
}

/// Runs the simulation.
pub fn simulate(c: &SimConfig) -> SimReport {
    let pools = match c.placement {
        // The shared cores, then the aggregator's (serial) receive path.
        Placement::SharedHost { cores } => vec![Pool::new(cores.max(1)), Pool::new(1)],
        // One per sensor, the aggregator's compute (the tail), its receive path.
        Placement::Dedicated => (0..c.sensors + 2).map(|_| Pool::new(1)).collect(),
    };
    let n_links = match c.links {
        LinkTopology::Parallel => c.sensors as usize,
        LinkTopology::SharedBus => 1,
    };
    let mut sim = Sim {
        c,
        rng: Rng(c.seed ^ 0x5EED),
        now: 0.0,
        seq: 0,
        events: BinaryHeap::new(),
        pools,
        sensor_busy: vec![false; c.sensors as usize],
        links: (0..n_links)
            .map(|_| Link {
                busy_until: 0.0,
                queued: 0,
                busy_seconds: 0.0,
                waiting: VecDeque::new(),
            })
            .collect(),
        frames: (0..c.frames)
            .map(|n| FrameState {
                capture: n as f64 / c.fps,
                first_arrival: None,
                views: 0,
                fused: false,
            })
            .collect(),
        tail_busy: false,
        tail_busy_seconds: 0.0,
        ready: VecDeque::new(),
        e2e: Vec::new(),
        waits: Vec::new(),
        degraded: 0,
        dropped: 0,
        late: 0,
    };
    if c.frames > 0 && c.sensors > 0 {
        sim.at(0.0, Ev::Trigger { frame: 0 });
    }
    while let Some(Timed { t, ev, .. }) = sim.events.pop() {
        sim.now = t;
        sim.handle(ev);
    }
    // Utilisation over the capture window (the deadline timers of the last frames run past it).
    let span = c.frames as f64 / c.fps;
    // The busiest of every compute resource (the receive path included).
    let compute_utilization = sim
        .pools
        .iter()
        .map(|p| p.busy_seconds / (span * p.servers as f64))
        .fold(0.0, f64::max);
    SimReport {
        sensors: c.sensors,
        fps: c.fps,
        end_to_end: Percentiles::of(&mut sim.e2e),
        fusion_wait: Percentiles::of(&mut sim.waits),
        frames_fused: sim.e2e.len() as u64,
        frames_degraded: sim.degraded,
        view_frames_dropped: sim.dropped,
        late_views: sim.late,
        link_utilization: sim
            .links
            .iter()
            .map(|l| l.busy_seconds / span)
            .fold(0.0, f64::max),
        tail_utilization: sim.tail_busy_seconds / span,
        compute_utilization,
    }
}

/// The highest frame rate in `[lo, hi]` that [`SimReport::sustains`] (bisection, `steps`
/// halvings); `None` if not even `lo` is sustained.
pub fn sustainable_fps(
    base: &SimConfig,
    lo: f64,
    hi: f64,
    steps: u32,
    max_utilization: f64,
) -> Option<f64> {
    let ok = |fps: f64| {
        let mut c = base.clone();
        c.fps = fps;
        simulate(&c).sustains(max_utilization)
    };
    if !ok(lo) {
        return None;
    }
    if ok(hi) {
        return Some(hi);
    }
    let (mut good, mut bad) = (lo, hi);
    for _ in 0..steps {
        let mid = (good * bad).sqrt();
        if ok(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SimConfig {
        SimConfig {
            sensors: 4,
            fps: 30.0,
            frames: 300,
            seed: 7,
            placement: Placement::Dedicated,
            sensor: Dist::Fixed(1e-3),
            message_bytes: 250,
            links: LinkTopology::Parallel,
            bandwidth_bits_per_second: 1e6,
            link_latency: Dist::Fixed(1e-4),
            sensor_queue: 8,
            receive: Dist::Fixed(1e-5),
            tail_base: Dist::Fixed(2e-4),
            tail_per_view: Dist::Fixed(5e-5),
            publish: Dist::Fixed(0.0),
            fusion_deadline_seconds: 0.05,
        }
    }

    #[test]
    fn fixed_stages_add_up_exactly() {
        // 1 ms head + 250 B at 1 Mbit/s (2 ms) + 0.1 ms + 10 µs receive + 0.2 + 4 × 0.05 ms tail;
        // the four views' receive work is serial on the aggregator: the last one ends 30 µs later.
        let r = simulate(&base());
        let expected = 1e-3 + 2e-3 + 1e-4 + 4.0 * 1e-5 + 2e-4 + 4.0 * 5e-5;
        assert!((r.end_to_end.p50 - expected).abs() < 1e-12, "{r:?}");
        assert_eq!(r.frames_fused, 300);
        assert!(r.sustains(0.9));
        assert!((r.link_utilization - 2e-3 * 30.0).abs() < 1e-3);
    }

    #[test]
    fn a_shared_bus_serialises_the_views() {
        let mut c = base();
        c.links = LinkTopology::SharedBus;
        let r = simulate(&c);
        // The last of four 2 ms transmissions ends 8 ms after the heads finish.
        let expected = 1e-3 + 4.0 * 2e-3 + 1e-4 + 1e-5 + 2e-4 + 4.0 * 5e-5;
        assert!((r.end_to_end.p50 - expected).abs() < 1e-9, "{r:?}");
        assert!((r.link_utilization - 8e-3 * 30.0).abs() < 1e-3);
    }

    #[test]
    fn an_overloaded_link_drops_frames_and_is_not_sustained() {
        let mut c = base();
        c.bandwidth_bits_per_second = 50_000.0; // 40 ms per message at 30 fps
        let r = simulate(&c);
        assert!(r.view_frames_dropped > 0, "{r:?}");
        assert!(!r.sustains(0.9));
        let fps = sustainable_fps(&base(), 1.0, 10_000.0, 30, 0.9).unwrap();

        // Bounded by the 2 ms link at 90 % utilisation: 450 fps.
        assert!((fps - 450.0).abs() / 450.0 < 0.02, "{fps}");
    }

    #[test]
    fn a_missing_view_is_fused_at_the_deadline() {
        let mut c = base();
        c.sensor = Dist::Empirical(vec![1e-3, 1e-3, 1e-3, 0.2]); // sometimes 200 ms late
        let r = simulate(&c);
        assert!(r.frames_degraded > 0 && r.late_views > 0, "{r:?}");
        assert!(r.fusion_wait.max <= c.fusion_deadline_seconds + 1e-9);
    }

    #[test]
    fn shared_cores_make_heads_wait_for_each_other() {
        let mut c = base();
        c.placement = Placement::SharedHost { cores: 2 };
        c.bandwidth_bits_per_second = 1e9;
        let r = simulate(&c);
        // Four 1 ms heads on two cores: the last finishes at 2 ms.
        assert!(r.end_to_end.p50 > 2e-3, "{r:?}");
        let mut d = c;
        d.placement = Placement::Dedicated;
        assert!(simulate(&d).end_to_end.p50 < 1.6e-3);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let mut c = base();
        c.sensor = Dist::LogNormal {
            median: 1e-3,
            sigma: 0.3,
        };
        let a = simulate(&c);
        let b = simulate(&c);
        assert_eq!(a.end_to_end, b.end_to_end);
    }
}
