//! The front door: what any peer on the network can make the aggregator hold before it has
//! proven to be a sensor. Connections are counted against a limit (over it they are closed at
//! once), and a connection that sends nothing within the handshake timeout is closed, so idle
//! sockets cannot pile up. With TLS configured the handshake happens here too (within the same
//! timeout), so a peer with a certificate from another CA is refused, logged and counted before
//! any gRPC. Streams and Hellos are bounded in [`crate::link`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use splitnets_ops::LogRateLimit;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::metrics::AggregatorMetrics;

/// Limits on connections, before any gRPC is spoken.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open TCP connections at once (sensors, watchers, health checks).
    pub max_connections: usize,
    /// A new connection must send its first byte (and finish its TLS handshake) within this.
    pub first_byte_timeout: Duration,
}

/// What the gRPC handlers know about a connection's peer (a request extension).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<std::net::SocketAddr>,
    /// The client certificate, chain-verified against the configured CA (TLS only).
    pub certificate: Option<CertificateDer<'static>>,
    pub tls: bool,
}

#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection holding one of the limited slots until it closes.
#[derive(Debug)]
pub struct AdmittedConnection {
    transport: Transport,
    peer: PeerInfo,
    _slot: OwnedSemaphorePermit,
}

impl Connected for AdmittedConnection {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

macro_rules! on_transport {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.transport {
            Transport::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Transport::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for AdmittedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_transport!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for AdmittedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_transport!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_transport!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_transport!(self, s => s.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_transport!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The TLS handshake, if configured, by `deadline`; `None`: refused (counted, logged).
async fn handshake(
    stream: TcpStream,
    remote: std::net::SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    deadline: tokio::time::Instant,
    metrics: &AggregatorMetrics,
    log: &LogRateLimit,
) -> Option<(Transport, PeerInfo)> {
    let mut peer = PeerInfo {
        remote: Some(remote),
        certificate: None,
        tls: acceptor.is_some(),
    };
    let Some(acceptor) = acceptor else {
        return Some((Transport::Plain(stream), peer));
    };
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            peer.certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            Some((Transport::Tls(Box::new(tls)), peer))
        }
        Ok(Err(e)) => {
            metrics.connection_refused("tls");
            if let Some(suppressed) = log.admit() {
                tracing::warn!(%remote, error = %e, suppressed, "connection refused: TLS handshake failed");
            }
            None
        }
        Err(_) => {
            metrics.connection_refused("silent");
            None
        }
    }
}

/// Accepts connections from `listener` under `limits`; the returned stream yields those that
/// spoke (and, with `tls`, completed a TLS handshake) within the first-byte timeout. The accept
/// task ends when the stream is dropped.
pub fn admit_connections(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<Arc<ServerConfig>>,
    metrics: AggregatorMetrics,
    log: Arc<LogRateLimit>,
) -> ReceiverStream<io::Result<AdmittedConnection>> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics.connection_refused("limit");
                if let Some(suppressed) = log.admit() {
                    tracing::warn!(%peer, max = limits.max_connections, suppressed, "connection refused: too many open connections");
                }
                continue;
            };
            // Acknowledgements and credits are small and latency-bound: no Nagle delay.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "TCP_NODELAY not set");
            }
            let (tx, metrics, log, acceptor) =
                (tx.clone(), metrics.clone(), log.clone(), acceptor.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                let deadline = tokio::time::Instant::now() + limits.first_byte_timeout;
                match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let Some((transport, peer)) =
                            handshake(stream, peer, acceptor, deadline, &metrics, &log).await
                        else {
                            return;
                        };
                        let _ = tx
                            .send(Ok(AdmittedConnection {
                                transport,
                                peer,
                                _slot: slot,
                            }))
                            .await;
                    }
                    Ok(_) => {} // closed (or failed) before a byte: nothing to serve
                    Err(_) => {
                        metrics.connection_refused("silent");
                        if let Some(suppressed) = log.admit() {
                            tracing::warn!(%peer, timeout_ms = limits.first_byte_timeout.as_millis() as u64, suppressed, "connection closed: nothing sent");
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
