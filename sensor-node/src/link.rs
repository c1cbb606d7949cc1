//! The link to the aggregator: the handshake (hello → reply), the pump (frames out,
//! acknowledgements and control messages in) and reconnection with exponential backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use splitnets_ops::{Phase, PhaseWatch};
use splitnets_proto::wire::{
    self, FeatureFrame, Hello, SensorMessage, aggregator_message, control,
    feature_link_client::FeatureLinkClient, sensor_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::camera::Flow;
use crate::config::Settings;
use crate::metrics::SensorMetrics;
use crate::{Counters, unix_ns};

/// Why one connection ended.
enum LinkEnd {
    /// The camera is done and every frame was sent (and acknowledged, within a timeout).
    Finished,
    /// The aggregator asked us to stop (draining); reconnect later.
    Drained,
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("aggregator rejected this sensor: {0}")]
    Rejected(String),
    #[error("{0}")]
    Transient(String),
}

/// An error with its causes ("transport error: ...: invalid peer certificate: UnknownIssuer"):
/// tonic's own message alone does not say why a connection failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn transient(e: &dyn std::fmt::Display) -> LinkError {
    LinkError::Transient(e.to_string())
}

/// What the link shares with the rest of the sensor.
pub(crate) struct LinkShared<'a> {
    pub settings: &'a Settings,
    pub digest: &'a str,
    pub counters: &'a Counters,
    pub metrics: &'a SensorMetrics,
    pub fps_bits: &'a AtomicU64,
    pub flow: &'a Flow,
    pub phase: &'a PhaseWatch,
    /// Variants in the bundle set (1: a single bundle).
    pub variants: usize,
    /// Headset emulation: the in-process link shaper, and the time its schedule counts from.
    pub shaper: Option<&'a std::sync::Mutex<crate::emulation::Shaper>>,
    pub started: std::time::Instant,
}

/// How long to keep delivering once the sensor is stopping: on SIGTERM at most a second; when
/// the camera has simply finished, the configured flush timeout.
const STOP_FLUSH: Duration = Duration::from_secs(1);

/// Connects, reconnecting with exponential backoff, until the camera's frames are all sent, the
/// aggregator rejects this sensor for good, or the sensor is stopping (SIGTERM, or the camera
/// finished) and its flush time is up: queued frames are then dropped and counted.
pub(crate) async fn run_link(
    l: &LinkShared<'_>,
    frames: &mut mpsc::Receiver<FeatureFrame>,
) -> anyhow::Result<()> {
    let s = l.settings;
    let mut backoff = s.reconnect_min;
    let mut phase = l.phase.clone();
    loop {
        let attempt = tokio::select! {
            r = one_connection(l, frames) => Some(r),
            // Stopping while not connected: nothing can be flushed, leave now.
            () = phase.wait_for(Phase::Draining), if !l.counters.is_connected() => None,
        };
        let retry = match attempt {
            None => {
                give_up(l, frames, "stopping while disconnected");
                return Ok(());
            }
            Some(Ok(LinkEnd::Finished)) => return Ok(()),
            Some(Ok(LinkEnd::Drained)) => {
                backoff = s.reconnect_min;
                "the aggregator is draining".to_string()
            }
            Some(Err(LinkError::Rejected(reason))) => {
                anyhow::bail!("aggregator rejected this sensor: {reason}");
            }
            Some(Err(LinkError::Transient(reason))) => reason,
        };
        if l.phase.reached(Phase::Draining) {
            give_up(l, frames, "stopping");
            return Ok(());
        }
        if frames.is_closed() {
            l.counters.camera_finished();
        }
        if l.counters
            .flush_deadline()
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            give_up(l, frames, "flush timeout after the camera finished");
            return Ok(());
        }
        l.metrics.reconnects.increment(1);
        tracing::warn!(reason = %wire::sanitize_id(&retry), retry_in_ms = backoff.as_millis() as u64, "link down; reconnecting");
        // Frames captured meanwhile queue up to `queue`, then the camera drops them.
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = phase.wait_for(Phase::Draining) => {}
        }
        backoff = (backoff * 2).min(s.reconnect_max);
    }
}

/// Drops what is still queued (counted) and says why.
fn give_up(l: &LinkShared<'_>, frames: &mut mpsc::Receiver<FeatureFrame>, why: &str) {
    frames.close();
    let mut unsent = 0u64;
    while frames.try_recv().is_ok() {
        unsent += 1;
    }
    l.counters.unsent.fetch_add(unsent, Ordering::Relaxed);
    l.counters.dropped.fetch_add(unsent, Ordering::Relaxed);
    l.metrics.frames_dropped.increment(unsent);
    if unsent > 0 {
        tracing::warn!(unsent, why, "exiting with frames not delivered");
    } else {
        tracing::info!(why, "link stopped");
    }
}

/// The aggregator's address as a tonic endpoint (TLS when configured).
fn endpoint(s: &Settings) -> Result<tonic::transport::Endpoint, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(s.aggregator.clone())
        .map_err(|e| format!("aggregator address {:?}: {e}", s.aggregator))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if let Some(tls) = &s.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS configuration: {e}"))?;
    }
    Ok(endpoint)
}

/// Debug thumbnails (`--debug-preview`): forwards what the camera offers on a stream of their
/// own, reconnecting every few seconds while the aggregator is away, until the sensor stops.
pub(crate) async fn run_preview(
    s: Settings,
    digest: String,
    mut thumbnails: mpsc::Receiver<wire::PreviewFrame>,
    mut phase: PhaseWatch,
) {
    use wire::debug_preview_client::DebugPreviewClient;
    loop {
        let attempt = async {
            let channel = endpoint(&s)?.connect().await.map_err(|e| error_chain(&e))?;
            let mut client = DebugPreviewClient::new(channel);
            let (tx, rx) = mpsc::channel(1);
            let call = client.send(ReceiverStream::new(rx));
            tokio::pin!(call);
            loop {
                tokio::select! {
                    r = &mut call => return r.map(|_| false).map_err(|e| e.message().to_string()),
                    t = thumbnails.recv() => match t {
                        Some(mut t) => {
                            t.bundle_digest.clone_from(&digest);
                            // A busy stream drops the thumbnail: it is only a preview.
                            let _ = tx.try_send(t);
                        }
                        None => return Ok(true),
                    },
                }
            }
        };
        let done = tokio::select! {
            r = attempt => match r {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(reason = %wire::sanitize_id(&e), "debug preview stream down; retrying in 5 s");
                    false
                }
            },
            () = phase.wait_for(Phase::Draining) => true,
        };
        if done {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = phase.wait_for(Phase::Draining) => return,
        }
    }
}

/// Opens the stream and exchanges hello and reply.
async fn handshake(
    l: &LinkShared<'_>,
) -> Result<
    (
        mpsc::Sender<SensorMessage>,
        Streaming<wire::AggregatorMessage>,
    ),
    LinkError,
> {
    let s = l.settings;
    let channel = endpoint(s)
        .map_err(LinkError::Rejected)?
        .connect()
        .await
        .map_err(|e| transient(&format!("connect {}: {}", s.aggregator, error_chain(&e))))?;
    let mut client = FeatureLinkClient::new(channel)
        .max_decoding_message_size(wire::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(wire::MAX_MESSAGE_BYTES);
    let (out_tx, out_rx) = mpsc::channel::<SensorMessage>(s.queue.max(4));
    out_tx
        .send(SensorMessage {
            kind: Some(sensor_message::Kind::Hello(Hello {
                sensor_id: s.id.clone(),
                view_index: s.view,
                bundle_digest: l.digest.to_string(),
                protocol_version: wire::PROTOCOL_VERSION,
                trigger_epoch_unix_ms: s.start_at_unix_ms.unwrap_or(0),
                frames_per_second: f64::from_bits(l.fps_bits.load(Ordering::Relaxed)),
                ack_every: s.ack_every,
            })),
        })
        .await
        .map_err(|e| transient(&e))?;
    let mut inbound = client
        .stream_features(ReceiverStream::new(out_rx))
        .await
        .map_err(|st| transient(&format!("open stream: {st}")))?
        .into_inner();
    match inbound.message().await.map_err(|st| transient(&st))? {
        Some(m) => match m.kind {
            Some(aggregator_message::Kind::HelloReply(r)) if r.accepted => {
                tracing::info!(
                    view = s.view,
                    aggregator = %wire::sanitize_id(&r.aggregator_id),
                    credit = r.credit_before_sequence,
                    next_sequence = r.next_sequence,
                    "connected"
                );
                l.flow
                    .next_sequence
                    .fetch_max(r.next_sequence, Ordering::Relaxed);
                l.flow
                    .credit
                    .send_replace(if r.credit_before_sequence == 0 {
                        u64::MAX
                    } else {
                        r.credit_before_sequence
                    });
                if l.variants > 1 {
                    l.flow
                        .switch_variant(r.variant, r.variant_from_sequence, l.variants);
                }
                Ok((out_tx, inbound))
            }
            Some(aggregator_message::Kind::HelloReply(r)) => {
                let reason = wire::RejectReason::try_from(r.reason)
                    .unwrap_or(wire::RejectReason::Unspecified);
                // A draining aggregator or a view still held by our previous stream is transient.
                Err(match reason {
                    wire::RejectReason::Draining | wire::RejectReason::ViewAlreadyConnected => {
                        LinkError::Transient(r.detail)
                    }
                    _ => LinkError::Rejected(format!(
                        "{} ({})",
                        wire::sanitize_id(&r.detail),
                        reason.as_str_name()
                    )),
                })
            }
            _ => Err(transient(&"first reply was not a HelloReply")),
        },
        None => Err(transient(&"aggregator closed the stream before replying")),
    }
}

/// How long to wait for the next acknowledgement: open-ended while the camera runs (frames
/// keep coming), bounded by the flush deadline once it has finished or the sensor is stopping.
fn ack_wait(l: &LinkShared<'_>, camera_done: bool) -> Duration {
    if !camera_done {
        return Duration::from_secs(10);
    }
    let limit = if l.phase.reached(Phase::Draining) {
        STOP_FLUSH
    } else {
        l.settings.flush_timeout
    };
    l.counters
        .flush_deadline()
        .map_or(limit, |d| {
            d.saturating_duration_since(std::time::Instant::now())
        })
        .min(limit)
}

/// One connection: handshake, then pump frames out and acknowledgements in.
async fn one_connection(
    l: &LinkShared<'_>,
    frames: &mut mpsc::Receiver<FeatureFrame>,
) -> Result<LinkEnd, LinkError> {
    let (out_tx, mut inbound) = handshake(l).await?;
    l.counters.connections.fetch_add(1, Ordering::Relaxed);
    let _connected = l.counters.connected_guard();
    let mut camera_done = false;
    let mut in_flight = 0u64;
    // Headset emulation: messages wait on a task of their own until the emulated link would
    // have delivered them (in order), so acknowledgements keep flowing meanwhile.
    // They wait on a thread of their own, not on tokio's timer: its 1 ms resolution added up
    // to a millisecond to emulated delays of tens of microseconds (measured by the latency
    // harness: 1.3 ms of link time for a predicted 0.03 ms).
    let mut shaped_tx = l.shaper.map(|_| {
        let (tx, mut rx) = mpsc::channel::<(std::time::Instant, SensorMessage)>(1024);
        let forward = out_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("link-shaper".into())
            .spawn(move || {
                while let Some((at, m)) = rx.blocking_recv() {
                    crate::emulation::sleep_until(at);
                    if forward.blocking_send(m).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the link shaper's thread");
        }
        tx
    });
    let mut out_tx = Some(out_tx);
    loop {
        tokio::select! {
            f = frames.recv(), if !camera_done => match f {
                Some(mut frame) => {
                    let encoded_at = frame.capture_time_unix_ns.unwrap_or(0)
                        + u64::from(frame.sensor_ns.unwrap_or(0));
                    frame.queue_ns = Some(u32::try_from(unix_ns().saturating_sub(encoded_at)).unwrap_or(u32::MAX));
                    let m = SensorMessage { kind: Some(sensor_message::Kind::Frame(frame)) };
                    let bytes = wire::sensor_message_wire_bytes(&m) as u64;
                    let Some(tx) = out_tx.as_ref() else { break };
                    let fate = l.shaper.map(|s| {
                        s.lock()
                            .expect("shaper lock")
                            .offer(l.started.elapsed().as_secs_f64(), bytes as usize)
                    });
                    let sent = match (fate, shaped_tx.as_ref()) {
                        (Some(crate::emulation::Fate::Lost), _) => {
                            // Lost on the emulated link: it left the sensor, it never arrives.
                            l.counters.sent.fetch_add(1, Ordering::Relaxed);
                            l.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                            l.counters.emulated_lost.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        (Some(crate::emulation::Fate::Deliver(d)), Some(stx)) => {
                            stx.send((std::time::Instant::now() + d, m)).await.is_ok()
                        }
                        _ => tx.send(m).await.is_ok(),
                    };
                    if !sent {
                        l.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        return Err(transient(&"stream closed while sending"));
                    }
                    in_flight += 1;
                    l.counters.sent.fetch_add(1, Ordering::Relaxed);
                    l.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                    l.metrics.frames_sent.increment(1);
                    l.metrics.link_sent_bytes.increment(bytes);
                }
                None => {
                    camera_done = true;
                    l.counters.camera_finished();
                    // Half-close: the aggregator acknowledges what is in flight, then ends (the
                    // shaper's task closes the stream once it has delivered what it holds).
                    out_tx = None;
                    shaped_tx = None;
                    if in_flight == 0 {
                        return Ok(LinkEnd::Finished);
                    }
                }
            },
            m = tokio::time::timeout(ack_wait(l, camera_done), inbound.message()), if camera_done || !frames.is_closed() || in_flight > 0 => {
                let m = match m {
                    Ok(m) => m.map_err(|st| transient(&st))?,
                    Err(_) if camera_done => {
                        tracing::warn!(in_flight, "acknowledgements still missing at the flush deadline");
                        return Ok(LinkEnd::Finished);
                    }
                    Err(_) => continue,
                };
                let Some(m) = m else {
                    return if camera_done { Ok(LinkEnd::Finished) } else { Err(transient(&"aggregator ended the stream")) };
                };
                match m.kind {
                    Some(aggregator_message::Kind::Ack(a)) => {
                        // Accepted frames come acknowledged together (Hello.ack_every).
                        let covered = u64::from(a.frames.max(1));
                        in_flight = in_flight.saturating_sub(covered);
                        if a.code == 0 {
                            l.counters.acked.fetch_add(covered, Ordering::Relaxed);
                        } else {
                            l.counters.rejected.fetch_add(1, Ordering::Relaxed);
                            l.metrics.frames_rejected.increment(1);
                            tracing::warn!(sequence = a.sequence, code = a.code, message = %a.message, "frame rejected by the aggregator");
                        }
                        if camera_done && in_flight == 0 {
                            return Ok(LinkEnd::Finished);
                        }
                    }
                    Some(aggregator_message::Kind::Control(c)) => match c.kind {
                        Some(control::Kind::Drain(d)) => {
                            tracing::info!(reason = %d.reason, "aggregator is draining; disconnecting");
                            return Ok(LinkEnd::Drained);
                        }
                        Some(control::Kind::Credit(c)) => {
                            l.flow.credit.send_if_modified(|v| {
                                let raise = c.send_before_sequence > *v || *v == u64::MAX;
                                if raise {
                                    *v = c.send_before_sequence;
                                }
                                raise
                            });
                        }
                        Some(control::Kind::SwitchVariant(v)) => {
                            l.flow.switch_variant(v.variant, v.from_sequence, l.variants);
                        }
                        Some(control::Kind::SetFrameRate(r)) if r.frames_per_second >= 0.0 => {
                            tracing::info!(fps = r.frames_per_second, "frame rate changed by the aggregator");
                            l.fps_bits.store(r.frames_per_second.to_bits(), Ordering::Relaxed);
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(LinkEnd::Finished)
}
