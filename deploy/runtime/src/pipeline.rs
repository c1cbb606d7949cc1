//! The whole split model in one process: each view through the [`HeadStage`], optionally through
//! the codec, then the [`TailStage`]. The same stages the daemons run, so this is the reference the
//! distributed pipeline must reproduce bit for bit, and the baseline its latency is compared to.

use std::time::Instant;

use splitnets_proto::bundle::Bundle;
use splitnets_proto::codec::EncodedTensor;

use crate::onnx_runtime::SessionOptions;
use crate::stage::{HeadStage, StageError, TailStage};

/// Per-stage time of one frame, nanoseconds (summed over views for the head and codec).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalTimings {
    pub head_ns: u64,
    pub encode_ns: u64,
    pub decode_ns: u64,
    pub tail_ns: u64,
}

/// The bundle's head and tail stages in this process.
#[derive(Debug)]
pub struct LocalPipeline {
    pub bundle: Bundle,
    head: HeadStage,
    tail: TailStage,
    /// Per crossing tensor, every view's float values (`[views, ...]`).
    stacked: Vec<Vec<f32>>,
    /// Per view, its encoded crossing tensors.
    encoded: Vec<Vec<EncodedTensor>>,
}

impl LocalPipeline {
    pub fn new(bundle: Bundle, opts: SessionOptions) -> Result<Self, StageError> {
        let head = HeadStage::new(&bundle, opts)?;
        let tail = TailStage::new(&bundle, opts)?;
        Ok(Self {
            bundle,
            head,
            tail,
            stacked: Vec::new(),
            encoded: Vec::new(),
        })
    }

    /// One frame end to end: each view's pixels (ascending view order) → logits. With
    /// `through_codec`, every feature is encoded and decoded as on the link.
    pub fn run_frame(
        &mut self,
        views: &[Vec<u8>],
        through_codec: bool,
    ) -> Result<(Vec<f32>, LocalTimings), StageError> {
        let mut t = LocalTimings::default();
        let tensors = self.head.tensors().len();
        self.stacked.resize_with(tensors, Vec::new);
        self.stacked.iter_mut().for_each(Vec::clear);
        self.encoded.clear();
        for pixels in views {
            if through_codec {
                let (enc, ht) = self.head.encode(pixels)?;
                t.head_ns += ht.preprocess_ns + ht.head_ns;
                t.encode_ns += ht.encode_ns;
                self.encoded.push(enc.to_vec());
            } else {
                let s = Instant::now();
                for (stack, f) in self
                    .stacked
                    .iter_mut()
                    .zip(self.head.feature_tensors(pixels)?)
                {
                    stack.extend_from_slice(f);
                }
                t.head_ns += s.elapsed().as_nanos() as u64;
            }
        }
        let logits = if through_codec {
            let (logits, tt) = self
                .tail
                .run_encoded(self.encoded.iter().map(Vec::as_slice))?;
            (t.decode_ns, t.tail_ns) = (tt.decode_ns, tt.tail_ns);
            logits.to_vec()
        } else {
            let s = Instant::now();
            let stacked: Vec<&[f32]> = self.stacked.iter().map(Vec::as_slice).collect();
            let logits = self.tail.run_floats_all(&stacked, views.len())?.to_vec();
            t.tail_ns = s.elapsed().as_nanos() as u64;
            logits
        };
        Ok((logits, t))
    }
}
