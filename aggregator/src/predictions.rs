//! The `Predictions` service: a broadcast of every prediction to every watcher. A slow watcher
//! skips (and is told how many it missed), never stalls the pipeline. Watch streams end once the
//! aggregator reaches [`Phase::Stopped`], after every prediction made before it was delivered.

use std::pin::Pin;

use futures::Stream;
use splitnets_ops::{Phase, PhaseWatch};
use splitnets_proto::wire::{Prediction, WatchRequest, predictions_server::Predictions};
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct PredictionsService {
    pub tx: broadcast::Sender<Prediction>,
    pub phase: PhaseWatch,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<Prediction, Status>> + Send>>;

#[tonic::async_trait]
impl Predictions for PredictionsService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = self.tx.subscribe();
        let stream = futures::stream::unfold(
            (rx, self.phase.clone(), 0u64, false),
            |(mut rx, mut phase, mut skipped, mut stopping)| async move {
                loop {
                    let got = if stopping {
                        match rx.try_recv() {
                            Ok(p) => Ok(p),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(Some(n)),
                            Err(_) => return None,
                        }
                    } else {
                        tokio::select! {
                            r = rx.recv() => match r {
                                Ok(p) => Ok(p),
                                Err(broadcast::error::RecvError::Lagged(n)) => Err(Some(n)),
                                Err(broadcast::error::RecvError::Closed) => return None,
                            },
                            () = phase.wait_for(Phase::Stopped) => Err(None),
                        }
                    };
                    match got {
                        Ok(mut p) => {
                            p.skipped_before = skipped;
                            return Some((Ok(p), (rx, phase, 0, stopping)));
                        }
                        Err(Some(n)) => skipped += n,
                        Err(None) => stopping = true,
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream) as WatchStream))
    }
}
