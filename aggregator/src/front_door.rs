//! The front door: what any peer on the network can make the aggregator hold before it has
//! proven to be a sensor. Connections are counted against a limit (over it they are closed at
//! once), and a connection that sends nothing within the handshake timeout is closed, so idle
//! sockets cannot pile up. Streams and Hellos are bounded in [`crate::link`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use splitnets_ops::LogRateLimit;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::AggregatorMetrics;

/// Limits on connections, before any gRPC is spoken.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open TCP connections at once (sensors, watchers, health checks).
    pub max_connections: usize,
    /// A new connection must send its first byte within this.
    pub first_byte_timeout: Duration,
}

/// An accepted connection holding one of the limited slots until it closes.
#[derive(Debug)]
pub struct AdmittedConnection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for AdmittedConnection {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for AdmittedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdmittedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections from `listener` under `limits`; the returned stream yields those that
/// spoke within the first-byte timeout. The accept task ends when the stream is dropped.
pub fn admit_connections(
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: AggregatorMetrics,
    log: Arc<LogRateLimit>,
) -> ReceiverStream<io::Result<AdmittedConnection>> {
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
            let (tx, metrics, log) = (tx.clone(), metrics.clone(), log.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut first)).await
                {
                    Ok(Ok(n)) if n > 0 => {
                        let _ = tx
                            .send(Ok(AdmittedConnection {
                                stream,
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
