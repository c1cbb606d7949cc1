//! The feature link service: one bidirectional stream per sensor.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use splitnets_ops::{LogRateLimit, Phase, PhaseWatch};
use splitnets_proto::codec;
use splitnets_proto::wire::{
    self, AggregatorMessage, Control, Credit, Drain, FrameAck, Hello, HelloReply, RejectReason,
    SensorMessage, aggregator_message, control, feature_link_server::FeatureLink, sensor_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::fleet::{Fleet, SequenceCheck, plausible_capture};
use crate::front_door::PeerInfo;
use crate::fusion::ViewArrival;
use crate::metrics::AggregatorMetrics;

/// gRPC status codes used in frame acknowledgements.
const CODE_OK: i32 = tonic::Code::Ok as i32;
const CODE_INVALID_ARGUMENT: i32 = tonic::Code::InvalidArgument as i32;

pub use splitnets_ops::unix_ns;

/// What the link checks sensors and frames against.
#[derive(Debug)]
pub struct LinkState {
    pub aggregator_id: String,
    pub bundle_digest: String,
    pub views: u32,
    /// What each variant's frames hold (one entry with a single bundle).
    pub variants: Vec<wire::FrameLayout>,
    /// A bundle set: frames must name their variant; switching state.
    pub switching: Option<Arc<crate::switching::Switching>>,
    pub connected: Mutex<HashSet<u32>>,
    /// Views are fused on the task that received them.
    pub fusion: Arc<crate::fusion::FusionStage>,
    /// The aggregator's lifecycle: streams send `Drain` once it reaches [`Phase::Draining`].
    pub phase: PhaseWatch,
    pub metrics: AggregatorMetrics,
    /// Trigger epoch, watermark and credits of the whole fleet.
    pub fleet: Arc<Fleet>,
    /// A stream must send its Hello within this.
    pub handshake_timeout: Duration,
    /// An admitted view that sends nothing for this long (or 4 frame periods, if longer) is
    /// disconnected, so a silent holder cannot lock the real sensor out.
    pub view_idle_timeout: Duration,
    /// The feature link's decoding limit (bytes per message), for the RESOURCE_EXHAUSTED reply.
    pub max_message_bytes: usize,
    /// Budget for warnings a peer can provoke.
    pub log: Arc<LogRateLimit>,
    /// mTLS: the certificate identity allowed for each view (`None`: no identity check).
    pub view_identities: Option<Vec<String>>,
    /// Rejections for the dashboard's timeline (dropped when no page is connected).
    pub dashboard: crate::dashboard::DashboardTap,
}

#[derive(Debug, Clone)]
pub struct FeatureLinkService {
    pub state: Arc<LinkState>,
}

/// Frees a view's slot when its stream ends, however it ends.
struct ViewSlot {
    state: Arc<LinkState>,
    view: u32,
}

impl Drop for ViewSlot {
    fn drop(&mut self) {
        self.state
            .connected
            .lock()
            .expect("connected set lock")
            .remove(&self.view);
        self.state.metrics.connected_sensors.decrement(1.0);
        tracing::info!(view = self.view, "sensor disconnected");
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<AggregatorMessage, Status>> + Send>>;

fn msg(kind: aggregator_message::Kind) -> Result<AggregatorMessage, Status> {
    Ok(AggregatorMessage { kind: Some(kind) })
}

fn rejection(st: &LinkState, reason: RejectReason, detail: String) -> OutStream {
    let (views, id) = (st.views, &st.aggregator_id);
    st.metrics.sensor_rejected(reason.as_str_name());
    st.dashboard
        .event(crate::dashboard::DashEvent::SensorRejected {
            reason: reason.as_str_name(),
        });
    if let Some(suppressed) = st.log.admit() {
        tracing::warn!(reason = reason.as_str_name(), %detail, suppressed, "sensor rejected");
    }
    let reply = msg(aggregator_message::Kind::HelloReply(HelloReply {
        accepted: false,
        reason: reason as i32,
        detail,
        views,
        aggregator_id: id.to_string(),
        credit_before_sequence: 0,
        next_sequence: 0,
        variant: 0,
        variant_from_sequence: 0,
    }));
    Box::pin(tokio_stream::iter([reply]))
}

/// Whether a sensor's hello is admitted; on success its view is marked connected.
fn admit(
    st: &LinkState,
    hello: &Hello,
    peer: Option<&PeerInfo>,
) -> Result<(), (RejectReason, String)> {
    if st.phase.reached(Phase::Draining) {
        return Err((
            RejectReason::Draining,
            "the aggregator is shutting down".into(),
        ));
    }
    if hello.protocol_version != wire::PROTOCOL_VERSION {
        return Err((
            RejectReason::ProtocolVersion,
            format!(
                "sensor speaks protocol {}, aggregator speaks {}",
                hello.protocol_version,
                wire::PROTOCOL_VERSION
            ),
        ));
    }
    if hello.bundle_digest != st.bundle_digest {
        return Err((
            RejectReason::BundleDigest,
            format!(
                "bundle digest mismatch: sensor {} loaded {}, aggregator runs {}; deploy the same bundle to both",
                wire::sanitize_id(&hello.sensor_id),
                wire::sanitize_id(&hello.bundle_digest),
                st.bundle_digest
            ),
        ));
    }
    if hello.view_index >= st.views {
        return Err((
            RejectReason::ViewIndex,
            format!(
                "view {} does not exist: the bundle has views 0..{}",
                hello.view_index, st.views
            ),
        ));
    }
    if let Some(ids) = &st.view_identities {
        let allowed = &ids[hello.view_index as usize];
        let cert = peer.and_then(|p| p.certificate.as_ref()).ok_or_else(|| {
            (
                RejectReason::Identity,
                format!(
                    "no client certificate: view {} needs one for {allowed:?} (mTLS)",
                    hello.view_index
                ),
            )
        })?;
        if !splitnets_ops::tls::certificate_valid_for(cert, allowed) {
            return Err((
                RejectReason::Identity,
                format!(
                    "certificate is not valid for {allowed:?}, the identity allowed for view {}",
                    hello.view_index
                ),
            ));
        }
    }
    if !st
        .fleet
        .join(hello.trigger_epoch_unix_ms, hello.frames_per_second)
    {
        return Err((
            RejectReason::StaleEpoch,
            format!(
                "trigger epoch {} ms is older than the fleet's {} ms; restart the sensor with the fleet's --start-at-unix-ms",
                hello.trigger_epoch_unix_ms,
                st.fleet.epoch()
            ),
        ));
    }
    if !st
        .connected
        .lock()
        .expect("connected set lock")
        .insert(hello.view_index)
    {
        return Err((
            RejectReason::ViewAlreadyConnected,
            format!("view {} is already connected", hello.view_index),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl FeatureLink for FeatureLinkService {
    type StreamFeaturesStream = OutStream;

    async fn stream_features(
        &self,
        request: Request<Streaming<SensorMessage>>,
    ) -> Result<Response<Self::StreamFeaturesStream>, Status> {
        let st = self.state.clone();
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(st.handshake_timeout, inbound.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return Err(Status::invalid_argument("stream ended before the hello")),
            Ok(Err(status)) => return Err(inbound_error(&st, None, status)),
            Err(_) => {
                st.metrics.handshake_timeouts.increment(1);
                if let Some(suppressed) = st.log.admit() {
                    tracing::warn!(
                        timeout_ms = st.handshake_timeout.as_millis() as u64,
                        suppressed,
                        "feature stream closed: no Hello"
                    );
                }
                return Err(Status::deadline_exceeded(format!(
                    "no Hello within {} ms",
                    st.handshake_timeout.as_millis()
                )));
            }
        };
        let Some(sensor_message::Kind::Hello(hello)) = first.kind else {
            return Ok(Response::new(rejection(
                &st,
                RejectReason::ExpectedHello,
                "the first message of a stream must be a Hello".into(),
            )));
        };
        if let Err((reason, detail)) = admit(&st, &hello, peer.as_ref()) {
            return Ok(Response::new(rejection(&st, reason, detail)));
        }
        let view = hello.view_index;
        let slot = ViewSlot {
            state: st.clone(),
            view,
        };
        st.metrics.connected_sensors.increment(1.0);
        let epoch = hello.trigger_epoch_unix_ms;
        let max_rate = hello.frames_per_second == 0.0;
        tracing::info!(
            view,
            sensor = %wire::sanitize_id(&hello.sensor_id),
            epoch,
            fps = hello.frames_per_second,
            "sensor connected"
        );

        let (tx, rx) = mpsc::channel::<Result<AggregatorMessage, Status>>(64);
        let mut switch = st.switching.as_ref().map(|s| s.command.subscribe());
        let now_running = switch
            .as_mut()
            .map(|w| *w.borrow_and_update())
            .unwrap_or_default();
        tx.send(msg(aggregator_message::Kind::HelloReply(HelloReply {
            variant: now_running.variant,
            variant_from_sequence: now_running.from_sequence,
            accepted: true,
            reason: RejectReason::Unspecified as i32,
            detail: String::new(),
            views: st.views,
            aggregator_id: st.aggregator_id.clone(),
            credit_before_sequence: if max_rate {
                *st.fleet.credit().borrow()
            } else {
                0
            },
            next_sequence: st.fleet.next_sequence(),
        })))
        .await
        .map_err(|_| Status::cancelled("sensor went away"))?;

        // Idle from the later of now and the fleet's trigger start (a sensor may join early).
        let idle_timeout = if hello.frames_per_second > 0.0 {
            st.view_idle_timeout
                .max(Duration::from_secs_f64(4.0 / hello.frames_per_second))
        } else {
            st.view_idle_timeout
        };
        let starts_in = Duration::from_millis(epoch.saturating_sub(unix_ns() / 1_000_000));
        let mut acks = AckBatch::new(hello.ack_every);
        tokio::spawn(async move {
            let _slot = slot;
            let mut phase = st.phase.clone();
            let mut credit = st.fleet.credit();
            let mut drain_sent = false;
            let idle = tokio::time::sleep(idle_timeout + starts_in);
            tokio::pin!(idle);
            loop {
                tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(m)) => {
                            let now = tokio::time::Instant::now();
                            idle.as_mut().reset(now + idle_timeout);
                            let ack = handle_message(&st, view, epoch, m).await;
                            // A rejection goes out at once, after the accepted frames before it.
                            let (first, second) = if ack.code == CODE_OK {
                                (acks.accepted(ack.sequence, now.into_std()), None)
                            } else {
                                (acks.take(now.into_std()), Some(ack))
                            };
                            let mut gone = false;
                            for a in [first, second].into_iter().flatten() {
                                gone |= tx.send(msg(aggregator_message::Kind::Ack(a))).await.is_err();
                            }
                            if gone {
                                break;
                            }
                        }
                        Ok(None) => {
                            // Half-closed: the sensor waits for its last frames' acknowledgement.
                            flush_acks(&mut acks, &tx).await;
                            break;
                        }
                        Err(status) => {
                            tracing::debug!(view, %status, "sensor stream ended with an error");
                            let _ = tx.send(Err(inbound_error(&st, Some(view), status))).await;
                            break;
                        }
                    },
                    () = &mut idle => {
                        flush_acks(&mut acks, &tx).await;
                        st.metrics.idle_streams_closed.increment(1);
                        if let Some(suppressed) = st.log.admit() {
                            tracing::warn!(view, idle_ms = idle_timeout.as_millis() as u64, suppressed, "sensor idle: view freed");
                        }
                        let _ = tx.send(Err(Status::deadline_exceeded(format!(
                            "no frame for {} ms: view {view} freed",
                            idle_timeout.as_millis()
                        )))).await;
                        break;
                    }
                    changed = async { switch.as_mut().expect("guarded").changed().await }, if switch.is_some() => {
                        if changed.is_err() {
                            switch = None;
                            continue;
                        }
                        let c = *switch.as_mut().expect("guarded").borrow_and_update();
                        let m = Control { kind: Some(control::Kind::SwitchVariant(wire::SwitchVariant {
                            variant: c.variant,
                            from_sequence: c.from_sequence,
                        })) };
                        if tx.send(msg(aggregator_message::Kind::Control(m))).await.is_err() {
                            break;
                        }
                    }
                    changed = credit.changed(), if max_rate => {
                        if changed.is_err() {
                            continue;
                        }
                        let send_before_sequence = *credit.borrow_and_update();
                        let c = Control { kind: Some(control::Kind::Credit(Credit { send_before_sequence })) };
                        if tx.send(msg(aggregator_message::Kind::Control(c))).await.is_err() {
                            break;
                        }
                    }
                    () = phase.wait_for(Phase::Draining), if !drain_sent => {
                        drain_sent = true;
                        // The sensor disconnects on Drain: what it sent is accounted for first.
                        flush_acks(&mut acks, &tx).await;
                        let _ = tx.send(msg(aggregator_message::Kind::Control(Control {
                            kind: Some(control::Kind::Drain(Drain { reason: "aggregator shutting down".into() })),
                        }))).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the acknowledgement of whatever is pending (before the stream ends or drains: the
/// sensor counts its frames delivered by it). A peer already gone loses nothing it could use.
async fn flush_acks(acks: &mut AckBatch, tx: &mpsc::Sender<Result<AggregatorMessage, Status>>) {
    if let Some(a) = acks.take(Instant::now()) {
        let _ = tx.send(msg(aggregator_message::Kind::Ack(a))).await;
    }
}

/// The longest an accepted frame waits for its cumulative acknowledgement while frames keep
/// coming (checked as each arrives; the stream's end flushes the rest).
const ACK_MAX_DELAY: Duration = Duration::from_millis(200);

/// Accepted frames of one stream not yet acknowledged (`Hello.ack_every`): each acknowledgement
/// written costs a wake-up of the connection's task and a socket write here, and a wake-up on
/// the sensor, so at camera rate one per frame was a large part of the link's CPU.
#[derive(Debug)]
struct AckBatch {
    every: u32,
    pending: u32,
    last_sequence: u64,
    last_sent: Instant,
}

impl AckBatch {
    fn new(ack_every: u32) -> Self {
        Self {
            every: ack_every.clamp(1, wire::MAX_ACK_EVERY),
            pending: 0,
            last_sequence: 0,
            last_sent: Instant::now(),
        }
    }

    /// Records an accepted frame; the cumulative acknowledgement to send now, if one is due.
    fn accepted(&mut self, sequence: u64, now: Instant) -> Option<FrameAck> {
        self.pending += 1;
        self.last_sequence = sequence;
        if self.pending >= self.every
            || now.saturating_duration_since(self.last_sent) >= ACK_MAX_DELAY
        {
            self.take(now)
        } else {
            None
        }
    }

    /// The acknowledgement of every accepted frame not yet acknowledged, if any.
    fn take(&mut self, now: Instant) -> Option<FrameAck> {
        if self.pending == 0 {
            return None;
        }
        let frames = std::mem::take(&mut self.pending);
        self.last_sent = now;
        Some(FrameAck {
            sequence: self.last_sequence,
            code: CODE_OK,
            message: String::new(),
            frames,
        })
    }
}

/// What a stream's reader error becomes for the peer: a message over the size limit is
/// RESOURCE_EXHAUSTED and counted (tonic's decoder reports it as OUT_OF_RANGE).
fn inbound_error(st: &LinkState, view: Option<u32>, status: Status) -> Status {
    if status.code() != tonic::Code::OutOfRange {
        return status;
    }
    st.metrics.oversize_messages.increment(1);
    if let Some(suppressed) = st.log.admit() {
        tracing::warn!(
            ?view,
            limit = st.max_message_bytes,
            suppressed,
            "message over the size limit"
        );
    }
    Status::resource_exhausted(format!(
        "message over the feature link's limit of {} bytes",
        st.max_message_bytes
    ))
}

/// Validates one message (structure only: decoding happens on the tail thread, straight into
/// the tail's input) and hands it to fusion; returns its acknowledgement.
async fn handle_message(st: &LinkState, view: u32, epoch: u64, m: SensorMessage) -> FrameAck {
    let arrived = Instant::now();
    let received_unix_ns = unix_ns();
    let message_bytes = wire::sensor_message_wire_bytes(&m) as u64;
    let vm = &st.metrics.views[view as usize];
    let frame = match m.kind {
        Some(sensor_message::Kind::Frame(f)) => f,
        Some(sensor_message::Kind::Hello(_)) => {
            return reject_frame(
                st,
                view,
                0,
                "hello",
                "a second Hello on an open stream".into(),
            );
        }
        None => return reject_frame(st, view, 0, "empty", "message without content".into()),
    };
    let Some(seq) = frame.sequence else {
        return reject_frame(
            st,
            view,
            0,
            "no_sequence",
            "frame has no sequence number".into(),
        );
    };
    match st.fleet.check(epoch, seq) {
        SequenceCheck::Plausible => {}
        SequenceCheck::StaleEpoch => {
            return reject_frame(
                st,
                view,
                seq,
                "epoch",
                format!(
                    "stream's trigger epoch {epoch} ms is older than the fleet's {} ms",
                    st.fleet.epoch()
                ),
            );
        }
        SequenceCheck::TooFarAhead { limit } => {
            return reject_frame(
                st,
                view,
                seq,
                "sequence",
                format!("sequence {seq} is ahead of the fleet (at most {limit} now)"),
            );
        }
    }
    // Which variant made it: a bundle set's frames say so, a single bundle's never do.
    let variant = match (st.switching.is_some(), frame.variant) {
        (false, None) => 0,
        (false, Some(v)) => {
            return reject_frame(
                st,
                view,
                seq,
                "variant",
                format!("frame names variant {v}, but this aggregator runs a single bundle"),
            );
        }
        (true, None) => {
            return reject_frame(
                st,
                view,
                seq,
                "variant",
                "frame names no variant; this aggregator runs a bundle set".into(),
            );
        }
        (true, Some(v)) if v as usize >= st.variants.len() => {
            return reject_frame(
                st,
                view,
                seq,
                "variant",
                format!(
                    "variant {v} does not exist: the set has variants 0..{}",
                    st.variants.len()
                ),
            );
        }
        (true, Some(v)) => v,
    };
    // The stream's constants come from the variant; the frame brings only what changes.
    let mut tensors = Vec::with_capacity(1);
    if let Err(e) = wire::frame_tensors(&frame, &st.variants[variant as usize], &mut tensors)
        .and_then(|()| tensors.iter().try_for_each(codec::validate))
    {
        return reject_frame(st, view, seq, "payload", e.to_string());
    }
    let capture = frame.capture_time_unix_ns.unwrap_or(0);
    let capture_plausible = plausible_capture(capture, received_unix_ns);
    if !capture_plausible {
        st.metrics.implausible_timestamps.increment(1);
    }
    let (sensor_ns, queue_ns) = (
        u64::from(frame.sensor_ns.unwrap_or(0)),
        u64::from(frame.queue_ns.unwrap_or(0)),
    );
    let link_ns = if capture_plausible {
        received_unix_ns.saturating_sub(capture + sensor_ns + queue_ns)
    } else {
        0
    };
    vm.frames_received.increment(1);
    vm.link_received_bytes.increment(message_bytes);
    if let Some(sw) = &st.switching
        && capture_plausible
    {
        sw.observe(
            received_unix_ns,
            crate::switching::FrameSeen {
                view: view as usize,
                variant: variant as usize,
                bytes: message_bytes as usize,
                link_seconds: link_ns as f64 * 1e-9,
                sequence: seq,
                capture_seconds: capture as f64 * 1e-9,
            },
        );
    }
    let arrival = ViewArrival {
        variant,
        epoch,
        sequence: seq,
        view,
        capture_time_unix_ns: capture,
        capture_plausible,
        sensor_ns,
        queue_ns,
        payload_bytes: frame.payload.len() as u64,
        tensors,
        arrived,
        link_ns,
        message_bytes,
    };
    if !st.fusion.add(arrival).await {
        return FrameAck {
            sequence: seq,
            code: tonic::Code::Unavailable as i32,
            message: "aggregator is shutting down".into(),
            frames: 1,
        };
    }
    FrameAck {
        sequence: seq,
        code: CODE_OK,
        message: String::new(),
        frames: 1,
    }
}

fn reject_frame(
    st: &LinkState,
    view: u32,
    sequence: u64,
    reason: &'static str,
    message: String,
) -> FrameAck {
    st.metrics.views[view as usize]
        .rejected(reason)
        .increment(1);
    st.dashboard
        .event(crate::dashboard::DashEvent::FrameRejected { view, reason });
    if let Some(suppressed) = st.log.admit() {
        tracing::warn!(view, sequence, reason, %message, suppressed, "frame rejected");
    }
    FrameAck {
        sequence,
        code: CODE_INVALID_ARGUMENT,
        message,
        frames: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_cumulative_every_n_frames_or_after_the_delay_limit() {
        let t0 = Instant::now();
        let mut b = AckBatch::new(3);
        assert!(b.accepted(10, t0).is_none());
        assert!(b.accepted(11, t0).is_none());
        let a = b.accepted(12, t0).expect("third frame");
        assert_eq!((a.sequence, a.frames, a.code), (12, 3, CODE_OK));
        assert!(b.take(t0).is_none(), "nothing pending");
        // A slow stream is acknowledged once its last acknowledgement is the delay limit old.
        assert!(b.accepted(13, t0 + ACK_MAX_DELAY / 2).is_none());
        let a = b.accepted(14, t0 + ACK_MAX_DELAY).expect("delay limit");
        assert_eq!((a.sequence, a.frames), (14, 2));
        // 0 from an older sensor means every frame; more than the maximum is clamped.
        assert_eq!(AckBatch::new(0).every, 1);
        assert_eq!(AckBatch::new(1000).every, wire::MAX_ACK_EVERY);
    }
}
