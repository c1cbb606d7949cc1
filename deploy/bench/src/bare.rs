//! A bare tonic stream: the project's `FeatureLink` service implemented as "acknowledge frames
//! (cumulatively, as `Hello.ack_every` asks, like the aggregator), do nothing else", and a client
//! that streams frames of the bundle's exact message size through it. What gRPC over loopback costs with no decode, no fusion and no tail: the floor
//! the daemons' frame path is compared to.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::Stream;
use splitnets_proto::wire::{
    self, AggregatorMessage, FeatureFrame, FrameAck, Hello, HelloReply, SensorMessage,
    aggregator_message,
    feature_link_client::FeatureLinkClient,
    feature_link_server::{FeatureLink, FeatureLinkServer},
    sensor_message,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Acknowledges everything; while `recording` is set, also notes each frame's one-way time
/// (receipt minus the client's `capture_time_unix_ns`, stamped as it sent the frame).
#[derive(Clone, Default)]
struct AckEverything {
    recording: Arc<AtomicBool>,
    one_way_ms: Arc<Mutex<Vec<f64>>>,
}

/// Nanoseconds since the Unix epoch (both ends of the bare stream read the same clock).
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

type AckStream = Pin<Box<dyn Stream<Item = Result<AggregatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl FeatureLink for AckEverything {
    type StreamFeaturesStream = AckStream;

    async fn stream_features(
        &self,
        req: Request<Streaming<SensorMessage>>,
    ) -> Result<Response<AckStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        tokio::spawn(async move {
            let (mut every, mut pending) = (1u32, 0u32);
            while let Some(Ok(m)) = inbound.next().await {
                let reply = match m.kind {
                    Some(sensor_message::Kind::Hello(h)) => {
                        every = h.ack_every.clamp(1, wire::MAX_ACK_EVERY);
                        aggregator_message::Kind::HelloReply(HelloReply {
                            accepted: true,
                            ..Default::default()
                        })
                    }
                    Some(sensor_message::Kind::Frame(f)) => {
                        if let Some(sent) = f.capture_time_unix_ns.filter(|&t| t > 0)
                            && me.recording.load(Relaxed)
                        {
                            let ms = unix_now_ns().saturating_sub(sent) as f64 / 1e6;
                            me.one_way_ms.lock().expect("one-way log").push(ms);
                        }
                        pending += 1;
                        if pending < every {
                            continue;
                        }
                        aggregator_message::Kind::Ack(FrameAck {
                            sequence: f.sequence.unwrap_or(0),
                            code: 0,
                            message: String::new(),
                            frames: std::mem::take(&mut pending),
                        })
                    }
                    None => continue,
                };
                if tx
                    .send(Ok(AggregatorMessage { kind: Some(reply) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What the bare stream measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BareResult {
    /// Bytes of one message on the stream (gRPC prefix included).
    pub message_bytes: usize,
    /// Send → acknowledgement, one message at a time, milliseconds.
    pub round_trip_ms: Vec<f64>,
    /// Messages per second with up to `window` unacknowledged.
    pub messages_per_second: f64,
    pub window: usize,
    /// Accepted frames per acknowledgement in the throughput burst (as the sensors ask).
    pub ack_every: u32,
}

/// Name of every thread of the bare server (its CPU is read per thread name) and of the paced
/// clients'.
const SERVER_THREADS: &str = "bare-server";
const CLIENT_THREADS: &str = "bare-client";

/// Serves [`AckEverything`] on its own runtime (a process of its own would be fairer still;
/// a runtime of its own keeps the client's and server's tasks off each other's workers).
fn serve(
    service: AckEverything,
) -> anyhow::Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(SERVER_THREADS.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(SERVER_THREADS)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("listener to tokio");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let svc = FeatureLinkServer::new(service)
                    .max_decoding_message_size(wire::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(wire::MAX_MESSAGE_BYTES);
                let _ = tonic::transport::Server::builder()
                    .tcp_nodelay(true)
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        })?;
    Ok((addr, stop_tx))
}

type Client = FeatureLinkClient<tonic::transport::Channel>;

/// A client of the bare server, with the daemons' message size limits.
async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .context("connecting to the bare tonic server")?;
    Ok(FeatureLinkClient::new(channel)
        .max_decoding_message_size(wire::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(wire::MAX_MESSAGE_BYTES))
}

/// Opens a stream: the Hello (asking for one acknowledgement per `ack_every` frames) and its reply.
async fn open(
    client: &mut Client,
    window: usize,
    ack_every: u32,
) -> anyhow::Result<(mpsc::Sender<SensorMessage>, Streaming<AggregatorMessage>)> {
    let (tx, rx) = mpsc::channel::<SensorMessage>(window.max(4));
    tx.send(SensorMessage {
        kind: Some(sensor_message::Kind::Hello(Hello {
            ack_every,
            ..Hello::default()
        })),
    })
    .await?;
    let mut inbound = client
        .stream_features(ReceiverStream::new(rx))
        .await?
        .into_inner();
    inbound.message().await?.context("no hello reply")?;
    Ok((tx, inbound))
}

/// Streams `frame` (resequenced) through a bare tonic server: `round_trips` messages one at a
/// time (each acknowledged), then, on a second stream, `burst` messages with up to `window` in
/// flight, acknowledged once per `ack_every` as the sensor daemons ask (so the comparison with
/// the daemons' frame path is like for like).
pub async fn measure(
    frame: FeatureFrame,
    round_trips: usize,
    burst: usize,
    window: usize,
    ack_every: u32,
) -> anyhow::Result<BareResult> {
    anyhow::ensure!(
        ack_every >= 1 && window >= ack_every as usize && burst.is_multiple_of(ack_every as usize),
        "bare stream: window {window} and burst {burst} must be multiples of ack_every {ack_every}"
    );
    let (addr, stop) = serve(AckEverything::default())?;
    let mut client = connect(addr).await?;
    let (tx, mut inbound) = open(&mut client, window, 1).await?;
    let msg = |seq: u64| {
        let mut f = frame.clone();
        f.sequence = Some(seq);
        SensorMessage {
            kind: Some(sensor_message::Kind::Frame(f)),
        }
    };
    let message_bytes = wire::sensor_message_wire_bytes(&msg(0));
    let mut seq = 0u64;
    let mut round_trip_ms = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let t = Instant::now();
        tx.send(msg(seq)).await?;
        inbound.message().await?.context("stream ended")?;
        round_trip_ms.push(t.elapsed().as_secs_f64() * 1e3);
        seq += 1;
    }
    drop((tx, inbound));
    let (tx, mut inbound) = open(&mut client, window, ack_every).await?;
    let t = Instant::now();
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < burst {
        while sent < burst && sent - acked < window {
            tx.send(msg(seq)).await?;
            seq += 1;
            sent += 1;
        }
        let m = inbound.message().await?.context("stream ended")?;
        if let Some(aggregator_message::Kind::Ack(a)) = m.kind {
            acked += a.frames.max(1) as usize;
        }
    }
    let messages_per_second = burst as f64 / t.elapsed().as_secs_f64();
    drop(tx);
    let _ = stop.send(());
    Ok(BareResult {
        message_bytes,
        round_trip_ms,
        messages_per_second,
        window,
        ack_every,
    })
}

/// The bare stream paced like cameras: what one gRPC message per camera per frame costs in CPU
/// when every message finds the threads asleep and their caches cold, with nothing else done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PacedBare {
    /// Connections (one per camera, as each sensor daemon has its own).
    pub streams: usize,
    pub fps: f64,
    /// Accepted frames per acknowledgement (as the sensors ask).
    pub ack_every: u32,
    /// Messages sent in the measured window.
    pub messages: u64,
    pub seconds: f64,
    /// CPU time of the server's threads (receive, decode the protobuf, acknowledge) per message.
    pub server_cpu_ms_per_message: f64,
    /// Times a server thread was put on a CPU, per message.
    pub server_runs_per_message: f64,
    /// The same for the clients (one single-threaded runtime per connection, as each sensor
    /// daemon has its own process).
    pub client_cpu_ms_per_message: f64,
    pub client_runs_per_message: f64,
    /// Per message in the measured window: the client's send (its runtime thread, as a sensor's
    /// link stage starts) → the server's handler has it, milliseconds. gRPC's one-way latency
    /// when every message finds the threads asleep: the floor of the daemons' link stage.
    pub one_way_ms: Vec<f64>,
}

/// Streams `frame` from `streams` clients, each on its own runtime and connection, one message
/// every 1/`fps` s, all started together (the cameras share a capture clock), acknowledged once
/// per `ack_every`; after `warmup` s, measures the server's and the clients' CPU over `seconds`
/// from their threads' `schedstat`. Blocking: run it off the async runtime.
pub fn measure_paced(
    frame: &FeatureFrame,
    streams: usize,
    fps: f64,
    ack_every: u32,
    warmup: Duration,
    seconds: f64,
) -> anyhow::Result<PacedBare> {
    use splitnets_deploy::stats::thread_runs_named;
    use std::sync::atomic::AtomicU64;
    anyhow::ensure!(
        streams >= 1 && fps > 0.0 && fps.is_finite() && seconds > 0.0,
        "paced bare stream: {streams} streams at {fps} fps for {seconds} s"
    );
    let service = AckEverything::default();
    let (addr, stop_server) = serve(service.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(1.0 / fps);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut clients = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (frame, stop, sent) = (frame.clone(), stop.clone(), sent.clone());
        clients.push(
            std::thread::Builder::new()
                .name(CLIENT_THREADS.into())
                .spawn(move || -> anyhow::Result<()> {
                    // One thread does it all (timer, send, connection, acknowledgements): the
                    // fewest wake-ups a client can have, so the floor is a floor.
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .thread_name(CLIENT_THREADS)
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let mut client = connect(addr).await?;
                        let window = 4 * ack_every as usize;
                        let (tx, mut inbound) = open(&mut client, window, ack_every).await?;
                        // Acknowledgements are read as they come, as a sensor's link loop does.
                        let acks = tokio::spawn(async move {
                            while let Ok(Some(_)) = inbound.message().await {}
                        });
                        let mut tick = tokio::time::interval_at(start, period);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        let mut seq = 0u64;
                        while !stop.load(Relaxed) {
                            tick.tick().await;
                            let mut f = frame.clone();
                            f.sequence = Some(seq);
                            f.capture_time_unix_ns = Some(unix_now_ns());
                            seq += 1;
                            tx.send(SensorMessage {
                                kind: Some(sensor_message::Kind::Frame(f)),
                            })
                            .await?;
                            sent.fetch_add(1, Relaxed);
                        }
                        drop(tx);
                        acks.abort();
                        Ok(())
                    })
                })?,
        );
    }
    std::thread::sleep(Duration::from_millis(200) + warmup);
    let me = std::process::id();
    let sample = || {
        (
            thread_runs_named(me, SERVER_THREADS).unwrap_or_default(),
            thread_runs_named(me, CLIENT_THREADS).unwrap_or_default(),
            sent.load(Relaxed),
        )
    };
    service.recording.store(true, Relaxed);
    let (s0, c0, n0) = sample();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (s1, c1, n1) = sample();
    service.recording.store(false, Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    let mut failed = None;
    for c in clients {
        match c.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow::anyhow!("a paced bare client panicked")),
        }
    }
    let _ = stop_server.send(());
    if let Some(e) = failed {
        return Err(e.context("paced bare tonic stream"));
    }
    let messages = n1 - n0;
    anyhow::ensure!(
        messages > 0,
        "paced bare tonic stream: no message sent in {elapsed:.1} s"
    );
    let per = |a: f64| a / messages as f64;
    Ok(PacedBare {
        streams,
        fps,
        ack_every,
        messages,
        seconds: elapsed,
        server_cpu_ms_per_message: per((s1.cpu_seconds - s0.cpu_seconds) * 1e3),
        server_runs_per_message: per(s1.runs.saturating_sub(s0.runs) as f64),
        client_cpu_ms_per_message: per((c1.cpu_seconds - c0.cpu_seconds) * 1e3),
        client_runs_per_message: per(c1.runs.saturating_sub(c0.runs) as f64),
        one_way_ms: std::mem::take(&mut *service.one_way_ms.lock().expect("one-way log")),
    })
}
