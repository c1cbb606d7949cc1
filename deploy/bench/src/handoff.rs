//! The two thread hand-offs of the daemons' frame path, alone: what waking a sleeping thread
//! costs on this host, paced like the cameras so that every hand-off finds its thread asleep.
//! They are the floors of the harness's "sensor queue" (the camera thread hands the encoded
//! frame to the sensor's one-threaded tokio runtime) and "hand-off" (a tokio worker of the
//! aggregator hands the fused frame to the tail thread) stages: the same channel (tokio `mpsc`)
//! and the same kinds of thread at each end, with nothing else done.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Hand-off latencies, milliseconds, one per frame.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HandoffFloor {
    pub fps: f64,
    /// A plain thread `blocking_send`s → a task on a one-threaded runtime (parked in its I/O
    /// driver, as the sensor's is between frames) receives.
    pub thread_to_runtime_ms: Vec<f64>,
    /// A task on a multi-threaded runtime `send`s → a plain thread blocked in
    /// `blocking_recv` receives.
    pub runtime_to_thread_ms: Vec<f64>,
}

/// Measures `frames` hand-offs of each kind at `fps`, one kind after the other. Blocking: run
/// it off the async runtime.
pub fn measure(fps: f64, frames: usize) -> anyhow::Result<HandoffFloor> {
    anyhow::ensure!(
        fps > 0.0 && fps.is_finite() && frames > 0,
        "hand-off floor: {frames} frames at {fps} fps"
    );
    let period = Duration::from_secs_f64(1.0 / fps);
    Ok(HandoffFloor {
        fps,
        thread_to_runtime_ms: thread_to_runtime(period, frames)?,
        runtime_to_thread_ms: runtime_to_thread(period, frames)?,
    })
}

fn thread_to_runtime(period: Duration, frames: usize) -> anyhow::Result<Vec<f64>> {
    let (tx, mut rx) = mpsc::channel::<Instant>(4);
    let receiver = std::thread::Builder::new()
        .name("handoff-runtime".into())
        .spawn(move || -> anyhow::Result<Vec<f64>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(async move {
                let mut ms = Vec::with_capacity(frames);
                while let Some(sent) = rx.recv().await {
                    ms.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                ms
            }))
        })?;
    // Give the runtime time to park before the first frame.
    std::thread::sleep(period);
    for _ in 0..frames {
        std::thread::sleep(period);
        tx.blocking_send(Instant::now())
            .map_err(|_| anyhow::anyhow!("hand-off floor: the runtime's task stopped"))?;
    }
    drop(tx);
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("hand-off floor: the runtime thread panicked"))?
}

fn runtime_to_thread(period: Duration, frames: usize) -> anyhow::Result<Vec<f64>> {
    let (tx, mut rx) = mpsc::channel::<Instant>(4);
    let receiver = std::thread::Builder::new()
        .name("handoff-thread".into())
        .spawn(move || {
            let mut ms = Vec::with_capacity(frames);
            while let Some(sent) = rx.blocking_recv() {
                ms.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            ms
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        for _ in 0..frames {
            tick.tick().await;
            tx.send(Instant::now())
                .await
                .map_err(|_| anyhow::anyhow!("hand-off floor: the receiving thread stopped"))?;
        }
        anyhow::Ok(())
    })?;
    drop(rt);
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("hand-off floor: the receiving thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_is_measured_in_both_directions() {
        let f = measure(200.0, 20).unwrap();
        assert_eq!(f.thread_to_runtime_ms.len(), 20);
        assert_eq!(f.runtime_to_thread_ms.len(), 20);
        // Latencies, not garbage: non-negative, and well under the frame period.
        for ms in f.thread_to_runtime_ms.iter().chain(&f.runtime_to_thread_ms) {
            assert!((0.0..5.0).contains(ms), "{ms}");
        }
        assert!(measure(0.0, 1).is_err());
    }
}
