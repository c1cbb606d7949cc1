//! The front-door abuse cases of issue 8 (item 5), replayed against a real aggregator with four
//! real sensors at 30 fps, printing what they cost: log bytes, aggregator memory, the real
//! sensors' predictions and latency, how long idle peers are held.
//!
//! ```text
//! cargo run --release -p splitnets-tests --example front_door_abuse [-- SECONDS]
//! ```
//! (build the daemons first: `cargo build --release --bins`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use splitnets_deploy::metric_sum;
use splitnets_proto::bundle::Bundle;
use splitnets_tests::abuse::{self, rss_bytes};
use splitnets_tests::{RawSensor, cluster, demo_bundle, sensor_args, trigger_in};

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    views: usize,
    end_to_end_ms: f64,
    has_view_3: bool,
}

fn summarize(seen: &[Seen], from: Instant, to: Instant) -> String {
    let mut e2e: Vec<f64> = seen
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .map(|s| s.end_to_end_ms)
        .collect();
    let full = seen
        .iter()
        .filter(|s| s.at >= from && s.at < to && s.views == 4)
        .count();
    e2e.sort_by(f64::total_cmp);
    if e2e.is_empty() {
        return "no predictions".into();
    }
    format!(
        "{} predictions ({} with 4 views), end-to-end p50 {:.2} ms, max {:.2} ms",
        e2e.len(),
        full,
        e2e[e2e.len() / 2],
        e2e[e2e.len() - 1]
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(6);
    let work = tempfile::tempdir()?;
    let bundle = demo_bundle();
    let digest = Bundle::load(&bundle)?.digest;
    let mut c = cluster(&bundle, work.path(), 50).await;
    let pid = c.aggregator_pid().expect("aggregator pid");
    let trigger = trigger_in(1500);
    for v in 0..4 {
        c.start_sensor(v, &sensor_args(None, 30.0, trigger))?;
    }
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let mut watch = c.watch().await?;
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(p)) = watch.message().await {
                seen.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    views: p.views_used.len(),
                    end_to_end_ms: p.end_to_end_ns as f64 / 1e6,
                    has_view_3: p.views_used.contains(&3),
                });
            }
        });
    }
    let peak_rss = Arc::new(Mutex::new(0u64));
    {
        let peak_rss = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                if let Some((rss, _)) = rss_bytes(pid) {
                    let mut p = peak_rss.lock().unwrap();
                    *p = (*p).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let log = work.path().join("aggregator.log");
    let log_bytes = || std::fs::metadata(&log).map_or(0, |m| m.len());
    tokio::time::sleep(Duration::from_secs(4)).await;
    println!("machine: {} cores", num_cpus());
    println!(
        "warm: aggregator RSS {:.1} MB; real sensors: {}",
        rss_bytes(pid).map_or(0, |r| r.0) as f64 / 1e6,
        summarize(
            &seen.lock().unwrap(),
            Instant::now() - Duration::from_secs(2),
            Instant::now()
        )
    );

    // 1. 32 connections send Hellos with a wrong digest: just under the 16 MiB message limit
    //    the aggregator had, then just under its new limit for this bundle (64 KiB).
    for id_bytes in [16 * 1024 * 1024 - 1024, 63 * 1024] {
        *peak_rss.lock().unwrap() = rss_bytes(pid).map_or(0, |r| r.0);
        let (rss_before, log_before) = (*peak_rss.lock().unwrap(), log_bytes());
        let t0 = Instant::now();
        let flood =
            abuse::hello_flood(&c.endpoint(), 32, id_bytes, Duration::from_secs(seconds)).await;
        let t1 = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut codes = flood.error_codes.clone();
        codes.sort_by_key(|c| *c as i32);
        codes.dedup();
        println!(
            "hello flood ({seconds} s, 32 connections, sensor_id of {id_bytes} B): {} hellos sent; log +{:.1} kB; aggregator RSS peak {:.1} MB (from {:.1}); largest reply detail {} B; stream errors {:?} ({} of them)",
            flood.hellos_sent,
            (log_bytes() - log_before) as f64 / 1e3,
            *peak_rss.lock().unwrap() as f64 / 1e6,
            rss_before as f64 / 1e6,
            flood.max_reply_detail_bytes,
            codes,
            flood.error_codes.len()
        );
        println!(
            "  real sensors during the flood: {}",
            summarize(&seen.lock().unwrap(), t0, t1)
        );
    }

    // 2. 200 streams that never say Hello; 500 sockets that never send a byte.
    let give_up = Duration::from_secs(8);
    let streams = abuse::streams_without_hello(&c.endpoint(), 200);
    let sockets = abuse::silent_sockets(c.grpc, 500, give_up);
    let deadline = tokio::time::Instant::now() + give_up;
    let mut ended = Vec::new();
    for s in streams {
        if let Ok(Ok(Some(r))) = tokio::time::timeout_at(deadline, s).await {
            ended.push(r);
        }
    }
    let mut closed = Vec::new();
    for s in sockets {
        if let Ok(Some(d)) = s.await {
            closed.push(d);
        }
    }
    println!(
        "200 streams without a Hello: {} ended within {:?} (codes {:?}); 500 silent sockets: {} closed by the aggregator within {:?} (slowest {:?})",
        ended.len(),
        give_up,
        {
            let mut c: Vec<_> = ended.iter().map(|e| e.0).collect();
            c.sort_by_key(|c| *c as i32);
            c.dedup();
            c
        },
        closed.len(),
        give_up,
        closed.iter().max()
    );

    // 3. A client takes view 3 with a Hello and stays silent; the real sensor 3 comes back.
    c.stop_sensor(3).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let squatter = RawSensor::connect_on(&c.endpoint(), 3, &digest, trigger, 30.0).await?;
    println!(
        "squatter on view 3: admitted={} {}",
        squatter.reply.accepted, squatter.reply.detail
    );
    let back = Instant::now();
    c.start_sensor(3, &sensor_args(None, 30.0, trigger))?;
    let wait = Duration::from_secs(20);
    let recovered = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = seen.lock().unwrap();
        if s.iter().any(|p| p.at > back && p.has_view_3) {
            break Some(back.elapsed());
        }
        drop(s);
        if back.elapsed() > wait {
            break None;
        }
    };
    println!(
        "real sensor 3 restarted while the squatter holds view 3: view 3 back in predictions after {recovered:?} (gave up after {wait:?})"
    );
    drop(squatter);

    // 4. A frame just over 16 MiB on an admitted stream.
    c.stop_sensor(2).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let code =
        abuse::oversize_frame(&c.endpoint(), 2, &digest, trigger, 16 * 1024 * 1024 + 1).await;
    println!("frame of 16 MiB + 1 B: stream ended with {code:?}");

    let m = c.metrics_text().await?;
    for name in [
        "aggregator_sensors_rejected_total",
        "aggregator_connections_refused_total",
        "aggregator_handshake_timeouts_total",
        "aggregator_idle_streams_closed_total",
        "aggregator_oversize_messages_total",
        "aggregator_log_lines_suppressed_total",
    ] {
        println!("{name} {}", metric_sum(&m, name, &[]));
    }
    println!(
        "end: aggregator RSS {:.1} MB; log {:.1} kB in all",
        rss_bytes(pid).map_or(0, |r| r.0) as f64 / 1e6,
        log_bytes() as f64 / 1e3
    );
    c.stop().await?;
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
