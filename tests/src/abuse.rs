//! Hostile clients for the aggregator's front door (issue 8, item 5): what any peer on the
//! network can try before it has proven to be a sensor. Used by the `front_door` test (small
//! numbers, assertions) and the `front_door_abuse` example (the numbers, figures).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use splitnets_proto::wire::{
    self, FeatureFrame, Hello, SensorMessage, aggregator_message,
    feature_link_client::FeatureLinkClient, sensor_message,
};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A Hello whose `sensor_id` is `id_bytes` long (newlines included) and whose digest is wrong.
pub fn oversized_hello(id_bytes: usize, view: u32) -> SensorMessage {
    let mut id = "evil\nsensor ".repeat(id_bytes / 12 + 1);
    id.truncate(id_bytes);
    SensorMessage {
        kind: Some(sensor_message::Kind::Hello(Hello {
            sensor_id: id,
            view_index: view,
            bundle_digest: "0".repeat(64),
            protocol_version: wire::PROTOCOL_VERSION,
            trigger_epoch_unix_ms: 0,
            frames_per_second: 30.0,
            ack_every: 1,
        })),
    }
}

/// What one round of a hostile client saw.
#[derive(Debug, Clone, Default)]
pub struct HelloFlood {
    pub hellos_sent: usize,
    /// Bytes of `detail` in the replies, the largest seen.
    pub max_reply_detail_bytes: usize,
    /// gRPC codes of streams the aggregator ended with an error instead of a reply.
    pub error_codes: Vec<tonic::Code>,
}

/// `connections` clients each send Hellos of `id_bytes` with a wrong digest, one after the other,
/// for `duration`.
pub async fn hello_flood(
    endpoint: &str,
    connections: usize,
    id_bytes: usize,
    duration: Duration,
) -> HelloFlood {
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let endpoint = endpoint.to_string();
        tasks.push(tokio::spawn(async move {
            let mut seen = HelloFlood::default();
            let Ok(mut client) = FeatureLinkClient::connect(endpoint).await else {
                return seen;
            };
            while Instant::now() < until {
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.send(oversized_hello(id_bytes, 0)).await;
                seen.hellos_sent += 1;
                match client.stream_features(ReceiverStream::new(rx)).await {
                    Ok(resp) => {
                        let mut inbound = resp.into_inner();
                        match inbound.message().await {
                            Ok(Some(m)) => {
                                if let Some(aggregator_message::Kind::HelloReply(r)) = m.kind {
                                    seen.max_reply_detail_bytes =
                                        seen.max_reply_detail_bytes.max(r.detail.len());
                                }
                            }
                            Ok(None) => {}
                            Err(s) => seen.error_codes.push(s.code()),
                        }
                    }
                    Err(s) => {
                        seen.error_codes.push(s.code());
                        if s.code() == tonic::Code::Unavailable {
                            break;
                        }
                    }
                }
            }
            seen
        }));
    }
    let mut all = HelloFlood::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.hellos_sent += s.hellos_sent;
            all.max_reply_detail_bytes = all.max_reply_detail_bytes.max(s.max_reply_detail_bytes);
            all.error_codes.extend(s.error_codes);
        }
    }
    all
}

/// Streams that never send a Hello: each task returns the code the stream ended with and when.
pub fn streams_without_hello(
    endpoint: &str,
    streams: usize,
) -> Vec<tokio::task::JoinHandle<Option<(tonic::Code, Duration)>>> {
    (0..streams)
        .map(|_| {
            let endpoint = endpoint.to_string();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut client = FeatureLinkClient::connect(endpoint).await.ok()?;
                let (tx, rx) = mpsc::channel::<SensorMessage>(1);
                let code = match client.stream_features(ReceiverStream::new(rx)).await {
                    Ok(resp) => {
                        let mut inbound = resp.into_inner();
                        loop {
                            match inbound.message().await {
                                Ok(Some(_)) => continue,
                                Ok(None) => break tonic::Code::Ok,
                                Err(s) => break s.code(),
                            }
                        }
                    }
                    Err(s) => s.code(),
                };
                drop(tx);
                Some((code, started.elapsed()))
            })
        })
        .collect()
}

/// TCP connections that never send a byte: each task returns how long until the aggregator
/// closed it (`None`: still open after `give_up`).
pub fn silent_sockets(
    addr: SocketAddr,
    sockets: usize,
    give_up: Duration,
) -> Vec<tokio::task::JoinHandle<Option<Duration>>> {
    (0..sockets)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
                let mut buf = [0u8; 256];
                loop {
                    match tokio::time::timeout(give_up, s.read(&mut buf)).await {
                        // The server's own bytes (HTTP/2 settings) before it closes.
                        Ok(Ok(n)) if n > 0 => continue,
                        Ok(_) => return Some(started.elapsed()),
                        Err(_) => return None,
                    }
                }
            })
        })
        .collect()
}

/// Sends one frame of `payload_bytes` on an admitted stream and returns the code the stream
/// ended with (or `Ok` with the frame's acknowledgement code when it was acknowledged).
pub async fn oversize_frame(
    endpoint: &str,
    view: u32,
    digest: &str,
    trigger: u64,
    payload_bytes: usize,
) -> anyhow::Result<tonic::Code> {
    let mut sensor = crate::RawSensor::connect_on(endpoint, view, digest, trigger, 30.0).await?;
    anyhow::ensure!(
        sensor.reply.accepted,
        "not admitted: {}",
        sensor.reply.detail
    );
    let frame = FeatureFrame {
        sequence: Some(0),
        capture_time_unix_ns: Some(0),
        payload: vec![0u8; payload_bytes].into(),
        ..Default::default()
    };
    match sensor.send(frame).await {
        Ok(ack) => Ok(tonic::Code::from(ack.code)),
        Err(e) => match e.downcast_ref::<tonic::Status>() {
            Some(s) => Ok(s.code()),
            // Ended without a status: what a client sees as OK.
            None if e.to_string() == "stream ended" => Ok(tonic::Code::Ok),
            None => Err(e),
        },
    }
}

/// Resident set size of process `pid` in bytes (now, and the peak so far).
pub fn rss_bytes(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
