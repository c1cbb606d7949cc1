//! The search space: what a subnet is (its genes) and the supernet's maximal dimensions.
//!
//! A network is a stem convolution, then `S` stages of inverted-residual blocks (MobileNetV2:
//! 1×1 expand → BN → ReLU → k×k depthwise → BN → ReLU → 1×1 project → BN, residual when the
//! shape allows); the first block of every stage has stride 2. Per stage the search picks the
//! depth, the width, the depthwise kernel and the expansion ratio. The split sits after stage
//! `split` (1..=S): the sensor runs the stem, stages `1..=split` and a *reduce* module (1×1 conv
//! to `c_red` channels, then quantization to `bits`); the aggregator runs a *recover* module
//! (1×1 conv back to the stage's width) per view, fuses the views (`fusion`), runs the remaining
//! stages, global average pooling and the classifier.
//!
//! The split may also sit *after the classifier* (`split = S + 1`, when
//! [`SearchSpace::after_classifier`]): each sensor runs the whole network and sends its logits,
//! quantized to `bits` (with learned fusion, plus the view's fusion score); the aggregator only
//! fuses the views' logits. This is "all on the sensor" with late fusion, made a member of the
//! space so the search can choose it where it wins (it did on every data set's baselines).
//!
//! Weight sharing: every subnet takes the first channels, the first blocks and the centre of the
//! kernels of the supernet's maximal tensors, so [`Arch::largest`] contains every other subnet.

use serde::{Deserialize, Serialize};

use crate::Rng;

/// How the aggregator fuses the recovered features of the views present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// Element-wise max (MVCNN view pooling).
    Max,
    /// Element-wise mean.
    Mean,
    /// Learned attention: a score per view from its pooled feature, softmax over the views
    /// present, weighted sum.
    Learned,
}

impl Fusion {
    pub const ALL: [Fusion; 3] = [Fusion::Max, Fusion::Mean, Fusion::Learned];
    pub fn name(self) -> &'static str {
        match self {
            Fusion::Max => "max",
            Fusion::Mean => "mean",
            Fusion::Learned => "learned",
        }
    }
}

/// How a network of the space is laid out between sensor and aggregator.
///
/// The search only makes [`Form::Split`] networks; the other forms are its baselines
/// (`baseline.rs`), built from the same blocks and weights layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// The searched form: reduce, quantize and recover after stage `arch.split`, views fused
    /// there (`arch.fusion`).
    Split,
    /// No split module: every view runs the whole network (on its sensor) and the views'
    /// logits are averaged (late fusion).
    LateFusion,
    /// No split module: every view runs the whole network, the views are fused (`arch.fusion`)
    /// after the last stage. `cut_after: Some(k)`: the feature after stage `k` is quantized to
    /// 8 bits as the codec does (a planner cut of this network, no retraining).
    Whole { cut_after: Option<usize> },
}

/// The choices of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageChoices {
    pub depths: Vec<usize>,
    pub widths: Vec<usize>,
    pub kernels: Vec<usize>,
    pub expansions: Vec<usize>,
}

impl StageChoices {
    pub fn max_depth(&self) -> usize {
        self.depths.iter().copied().max().unwrap_or(1)
    }
    pub fn max_width(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(1)
    }
    pub fn max_kernel(&self) -> usize {
        self.kernels.iter().copied().max().unwrap_or(3)
    }
    pub fn max_expansion(&self) -> usize {
        self.expansions.iter().copied().max().unwrap_or(1)
    }
}

/// The whole space, which also fixes the supernet's maximal tensor shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    /// Input frame side (square, one grey channel).
    pub input_size: usize,
    /// Cameras (views) per sample.
    pub views: usize,
    pub classes: usize,
    /// Stride of the stem convolution (2 for 64-pixel frames, 1 for 28/32).
    pub stem_stride: usize,
    pub stem_widths: Vec<usize>,
    pub stages: Vec<StageChoices>,
    pub reduce_channels: Vec<usize>,
    pub bits: Vec<u32>,
    pub fusions: Vec<Fusion>,
    /// Whether the split may sit after the classifier (split position `S + 1`).
    #[serde(default)]
    pub after_classifier: bool,
}

impl SearchSpace {
    /// The default space for `input_size`-pixel frames, `views` cameras and `classes` classes.
    pub fn standard(input_size: usize, views: usize, classes: usize) -> Self {
        let stage = |depths: &[usize], widths: &[usize]| StageChoices {
            depths: depths.to_vec(),
            widths: widths.to_vec(),
            kernels: vec![3, 5],
            expansions: vec![2, 3, 4],
        };
        Self {
            input_size,
            views,
            classes,
            stem_stride: if input_size > 40 { 2 } else { 1 },
            stem_widths: vec![8, 12, 16],
            stages: vec![
                stage(&[1, 2], &[16, 20, 24]),
                stage(&[1, 2, 3], &[24, 32, 40]),
                stage(&[1, 2, 3], &[40, 52, 64]),
            ],
            reduce_channels: vec![2, 4, 8, 16],
            bits: vec![8, 6, 4, 2],
            fusions: if views > 1 {
                Fusion::ALL.to_vec()
            } else {
                vec![Fusion::Max]
            },
            after_classifier: true,
        }
    }

    /// How many split positions there are: after each stage, and after the classifier when
    /// the space allows it.
    pub fn split_positions(&self) -> usize {
        self.stages.len() + usize::from(self.after_classifier)
    }

    pub fn max_stem(&self) -> usize {
        self.stem_widths.iter().copied().max().unwrap_or(1)
    }
    pub fn max_reduce(&self) -> usize {
        self.reduce_channels.iter().copied().max().unwrap_or(1)
    }

    /// Spatial side after the stem and after each stage (`[stem, stage 1, ..]`).
    pub fn sides(&self) -> Vec<usize> {
        let mut s = vec![self.input_size.div_ceil(self.stem_stride)];
        for _ in &self.stages {
            let last = *s.last().unwrap_or(&1);
            s.push(last.div_ceil(2));
        }
        s
    }

    /// Checks that every choice list is non-empty and sensible.
    pub fn validate(&self) -> Result<(), String> {
        if self.stages.is_empty() {
            return Err("no stage".into());
        }
        if self.input_size < 8 || self.views == 0 || self.classes < 2 {
            return Err(format!(
                "input {} px, {} views, {} classes",
                self.input_size, self.views, self.classes
            ));
        }
        let nonempty = |n: &str, l: usize| {
            if l == 0 {
                Err(format!("{n}: no choice"))
            } else {
                Ok(())
            }
        };
        nonempty("stem widths", self.stem_widths.len())?;
        nonempty("reduce channels", self.reduce_channels.len())?;
        nonempty("bits", self.bits.len())?;
        nonempty("fusions", self.fusions.len())?;
        for (i, s) in self.stages.iter().enumerate() {
            nonempty(&format!("stage {i} depths"), s.depths.len())?;
            nonempty(&format!("stage {i} widths"), s.widths.len())?;
            nonempty(&format!("stage {i} kernels"), s.kernels.len())?;
            nonempty(&format!("stage {i} expansions"), s.expansions.len())?;
            if s.kernels.iter().any(|k| k % 2 == 0) || s.depths.contains(&0) {
                return Err(format!("stage {i}: kernels must be odd, depths ≥ 1"));
            }
        }
        if self.bits.iter().any(|&b| !(1..=8).contains(&b)) {
            return Err("bits must be within 1..=8".into());
        }
        Ok(())
    }
}

/// One stage of a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StageArch {
    pub depth: usize,
    pub width: usize,
    pub kernel: usize,
    pub expansion: usize,
}

/// A subnet: its architecture, split position and split module.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Arch {
    pub stem_width: usize,
    pub stages: Vec<StageArch>,
    /// The split is after stage `split` (1-based, `1..=stages`), or after the classifier
    /// (`stages + 1`, when the space allows it).
    pub split: usize,
    /// Channels of the split feature.
    pub c_red: usize,
    /// Bits per element of the split feature on the wire.
    pub bits: u32,
    pub fusion: Fusion,
}

/// `c_red` of a subnet split after the classifier (it sends logits; there is no reduce module).
pub const NO_REDUCE: usize = 0;

fn max_of<T: Copy + Ord>(v: &[T]) -> T {
    *v.iter().max().expect("validated non-empty")
}
fn min_of<T: Copy + Ord>(v: &[T]) -> T {
    *v.iter().min().expect("validated non-empty")
}
fn pick<T: Copy>(v: &[T], rng: &mut Rng) -> T {
    v[rng.below(v.len() as u64) as usize]
}

impl Arch {
    /// The largest subnet (the teacher): every dimension at its maximum, 8-bit widest split
    /// module, learned fusion where there are several views, split after `split`.
    pub fn largest(space: &SearchSpace, split: usize) -> Self {
        Self {
            stem_width: space.max_stem(),
            stages: space
                .stages
                .iter()
                .map(|s| StageArch {
                    depth: max_of(&s.depths),
                    width: max_of(&s.widths),
                    kernel: max_of(&s.kernels),
                    expansion: max_of(&s.expansions),
                })
                .collect(),
            split,
            c_red: if split > space.stages.len() {
                NO_REDUCE
            } else {
                space.max_reduce()
            },
            bits: max_of(&space.bits),
            fusion: *space.fusions.last().unwrap_or(&Fusion::Max),
        }
    }

    /// The smallest subnet: every dimension at its minimum, fewest bits, max fusion.
    pub fn smallest(space: &SearchSpace, split: usize) -> Self {
        Self {
            stem_width: min_of(&space.stem_widths),
            stages: space
                .stages
                .iter()
                .map(|s| StageArch {
                    depth: min_of(&s.depths),
                    width: min_of(&s.widths),
                    kernel: min_of(&s.kernels),
                    expansion: min_of(&s.expansions),
                })
                .collect(),
            split,
            c_red: if split > space.stages.len() {
                NO_REDUCE
            } else {
                min_of(&space.reduce_channels)
            },
            bits: min_of(&space.bits),
            fusion: space.fusions[0],
        }
    }

    /// A uniformly random subnet.
    pub fn random(space: &SearchSpace, rng: &mut Rng) -> Self {
        Self {
            stem_width: pick(&space.stem_widths, rng),
            stages: space
                .stages
                .iter()
                .map(|s| StageArch {
                    depth: pick(&s.depths, rng),
                    width: pick(&s.widths, rng),
                    kernel: pick(&s.kernels, rng),
                    expansion: pick(&s.expansions, rng),
                })
                .collect(),
            split: 1 + rng.below(space.split_positions() as u64) as usize,
            c_red: pick(&space.reduce_channels, rng),
            bits: pick(&space.bits, rng),
            fusion: pick(&space.fusions, rng),
        }
        .settled(space, rng)
    }

    /// A random subnet with its split at `split` (`1..=space.split_positions()`).
    pub fn random_at_split(space: &SearchSpace, split: usize, rng: &mut Rng) -> Self {
        let mut a = Self::random(space, rng);
        a.split = split;
        a.settled(space, rng)
    }

    /// Whether the split sits after the classifier (the sensor sends logits).
    pub fn after_classifier(&self) -> bool {
        self.split > self.stages.len()
    }

    /// The split feature of one view as the sensor sends it (no batch axis): `[c_red, h, w]`,
    /// or `[classes]` logits after the classifier (`classes + 1` with learned fusion over
    /// several views: the view's fusion score rides along).
    pub fn feature_shape(&self, space: &SearchSpace) -> Vec<usize> {
        if self.after_classifier() {
            let score = usize::from(space.views > 1 && self.fusion == Fusion::Learned);
            vec![space.classes + score]
        } else {
            let hw = space.sides()[self.split];
            vec![self.c_red, hw, hw]
        }
    }

    /// One canonical form per network: `c_red` is [`NO_REDUCE`] after the classifier and a
    /// choice of the space elsewhere (re-drawn when a gene came from a logits parent).
    fn settled(mut self, space: &SearchSpace, rng: &mut Rng) -> Self {
        if self.after_classifier() {
            self.c_red = NO_REDUCE;
        } else if !space.reduce_channels.contains(&self.c_red) {
            self.c_red = pick(&space.reduce_channels, rng);
        }
        self
    }

    /// Each gene re-drawn with probability `p`.
    pub fn mutate(&self, space: &SearchSpace, p: f64, rng: &mut Rng) -> Self {
        let mut a = self.clone();
        let hit = |rng: &mut Rng| rng.next_f64() < p;
        if hit(rng) {
            a.stem_width = pick(&space.stem_widths, rng);
        }
        for (s, c) in a.stages.iter_mut().zip(&space.stages) {
            if hit(rng) {
                s.depth = pick(&c.depths, rng);
            }
            if hit(rng) {
                s.width = pick(&c.widths, rng);
            }
            if hit(rng) {
                s.kernel = pick(&c.kernels, rng);
            }
            if hit(rng) {
                s.expansion = pick(&c.expansions, rng);
            }
        }
        if hit(rng) {
            a.split = 1 + rng.below(space.split_positions() as u64) as usize;
        }
        if hit(rng) {
            a.c_red = pick(&space.reduce_channels, rng);
        }
        if hit(rng) {
            a.bits = pick(&space.bits, rng);
        }
        if hit(rng) {
            a.fusion = pick(&space.fusions, rng);
        }
        a.settled(space, rng)
    }

    /// Every gene from either parent with equal probability.
    pub fn crossover(&self, other: &Self, space: &SearchSpace, rng: &mut Rng) -> Self {
        let coin = |rng: &mut Rng| rng.next_f64() < 0.5;
        Self {
            stem_width: if coin(rng) {
                self.stem_width
            } else {
                other.stem_width
            },
            stages: self
                .stages
                .iter()
                .zip(&other.stages)
                .map(|(a, b)| StageArch {
                    depth: if coin(rng) { a.depth } else { b.depth },
                    width: if coin(rng) { a.width } else { b.width },
                    kernel: if coin(rng) { a.kernel } else { b.kernel },
                    expansion: if coin(rng) { a.expansion } else { b.expansion },
                })
                .collect(),
            split: if coin(rng) { self.split } else { other.split },
            c_red: if coin(rng) { self.c_red } else { other.c_red },
            bits: if coin(rng) { self.bits } else { other.bits },
            fusion: if coin(rng) { self.fusion } else { other.fusion },
        }
        .settled(space, rng)
    }

    /// Whether every gene is one of the space's choices.
    pub fn is_in(&self, space: &SearchSpace) -> bool {
        self.stages.len() == space.stages.len()
            && space.stem_widths.contains(&self.stem_width)
            && self.stages.iter().zip(&space.stages).all(|(s, c)| {
                c.depths.contains(&s.depth)
                    && c.widths.contains(&s.width)
                    && c.kernels.contains(&s.kernel)
                    && c.expansions.contains(&s.expansion)
            })
            && (1..=space.split_positions()).contains(&self.split)
            && if self.after_classifier() {
                self.c_red == NO_REDUCE
            } else {
                space.reduce_channels.contains(&self.c_red)
            }
            && space.bits.contains(&self.bits)
            && space.fusions.contains(&self.fusion)
    }

    /// A compact one-line description, e.g. `s16|d2w24k5e4|SPLIT c8 b4 max|...`, or
    /// `s16|...|LOGITS b8 mean` when the split is after the classifier.
    /// The network alone (stem and stages), without the split genes, with the fusion where it
    /// matters (`views > 1`): how a baseline's network is named.
    pub fn short_network(&self, views: usize) -> String {
        let mut s = format!("s{}", self.stem_width);
        for st in &self.stages {
            s.push_str(&format!(
                "|d{}w{}k{}e{}",
                st.depth, st.width, st.kernel, st.expansion
            ));
        }
        if views > 1 {
            s.push_str(&format!(" {} fusion", self.fusion.name()));
        }
        s
    }

    pub fn short(&self) -> String {
        let mut s = format!("s{}", self.stem_width);
        for (i, st) in self.stages.iter().enumerate() {
            s.push_str(&format!(
                "|d{}w{}k{}e{}",
                st.depth, st.width, st.kernel, st.expansion
            ));
            if i + 1 == self.split {
                s.push_str(&format!(
                    "|SPLIT c{} b{} {}",
                    self.c_red,
                    self.bits,
                    self.fusion.name()
                ));
            }
        }
        if self.after_classifier() {
            s.push_str(&format!("|LOGITS b{} {}", self.bits, self.fusion.name()));
        }
        s
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    /// Parses [`Arch::short`]'s form back (how a search's evaluation log is read on resume).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("subnet `{text}`: {what}");
        let num = |s: &str, what: &str| s.parse::<usize>().map_err(|_| bad(what));
        let mut parts = text.split('|');
        let stem = parts.next().and_then(|p| p.strip_prefix('s'));
        let stem_width = num(stem.ok_or_else(|| bad("no stem `sN`"))?, "stem width")?;
        let (mut stages, mut split, mut c_red, mut bits, mut fusion) =
            (Vec::new(), None, 0, 0, Fusion::Max);
        let fusion_named = |fu: &str| {
            Fusion::ALL
                .into_iter()
                .find(|x| x.name() == fu)
                .ok_or_else(|| bad("unknown fusion"))
        };
        let mut after_classifier = false;
        for p in parts {
            if after_classifier {
                return Err(bad("nothing may follow `LOGITS`"));
            }
            if let Some(rest) = p.strip_prefix("LOGITS ") {
                let f: Vec<&str> = rest.split(' ').collect();
                let [b, fu] = f[..] else {
                    return Err(bad("logits split is not `LOGITS bN fusion`"));
                };
                if split.is_some() {
                    return Err(bad("both `SPLIT` and `LOGITS`"));
                }
                bits = num(b.strip_prefix('b').unwrap_or(""), "bits")? as u32;
                fusion = fusion_named(fu)?;
                c_red = NO_REDUCE;
                split = Some(stages.len() + 1);
                after_classifier = true;
                continue;
            }
            if let Some(rest) = p.strip_prefix("SPLIT ") {
                let f: Vec<&str> = rest.split(' ').collect();
                let [c, b, fu] = f[..] else {
                    return Err(bad("split is not `SPLIT cN bN fusion`"));
                };
                if split.is_some() {
                    return Err(bad("two splits"));
                }
                c_red = num(c.strip_prefix('c').unwrap_or(""), "reduce channels")?;
                bits = num(b.strip_prefix('b').unwrap_or(""), "bits")? as u32;
                fusion = fusion_named(fu)?;
                split = Some(stages.len());
                continue;
            }
            // dDwWkKeE
            let field = |tag: char, next: Option<char>| -> Result<usize, String> {
                let start = p.find(tag).ok_or_else(|| bad("stage is not `dNwNkNeN`"))? + 1;
                let end = next.and_then(|n| p[start..].find(n).map(|i| start + i));
                num(&p[start..end.unwrap_or(p.len())], "stage field")
            };
            if !p.starts_with('d') {
                return Err(bad("stage is not `dNwNkNeN`"));
            }
            stages.push(StageArch {
                depth: field('d', Some('w'))?,
                width: field('w', Some('k'))?,
                kernel: field('k', Some('e'))?,
                expansion: field('e', None)?,
            });
        }
        let split = split.ok_or_else(|| bad("no `SPLIT` or `LOGITS`"))?;
        if split == 0 {
            return Err(bad("the split is before the first stage"));
        }
        Ok(Self {
            stem_width,
            stages,
            split,
            c_red,
            bits,
            fusion,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_and_bred_subnets_stay_in_the_space() {
        let space = SearchSpace::standard(28, 4, 10);
        space.validate().unwrap();
        let mut rng = Rng::new(3);
        let big = Arch::largest(&space, 3);
        let small = Arch::smallest(&space, 1);
        assert!(big.is_in(&space) && small.is_in(&space));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let a = Arch::random(&space, &mut rng);
            let b = a
                .mutate(&space, 0.2, &mut rng)
                .crossover(&big, &space, &mut rng);
            assert!(a.is_in(&space) && b.is_in(&space));
            assert_eq!(
                b.short().parse::<Arch>().as_ref(),
                Ok(&b),
                "short form round-trips"
            );
            seen.insert(a);
        }
        assert!(seen.len() > 150, "random subnets are diverse");
        let logits = seen.iter().filter(|a| a.after_classifier()).count();
        assert!(
            (20..80).contains(&logits),
            "about a quarter split after the classifier: {logits} of {}",
            seen.len()
        );
        assert!(
            seen.iter()
                .all(|a| a.after_classifier() == (a.c_red == NO_REDUCE)),
            "c_red is canonical"
        );
        let mut narrow = space.clone();
        narrow.after_classifier = false;
        assert!(
            (0..100).all(|_| !Arch::random(&narrow, &mut rng).after_classifier()),
            "a space without the placement never samples it"
        );
        let logits_big = Arch::largest(&space, 4);
        assert!(logits_big.is_in(&space) && !logits_big.is_in(&narrow));
        assert_eq!(
            logits_big.feature_shape(&space),
            vec![11],
            "logits and a score"
        );
        assert_eq!(big.feature_shape(&space), vec![16, 4, 4]);
        assert_eq!(space.sides(), vec![28, 14, 7, 4]);
        for bad in [
            "",
            "s8",
            "s8|d1w16k3e2",
            "x8|SPLIT c2 b2 max",
            "s8|d1w16|SPLIT c2 b2 max",
            "s8|d1w16k3e2|LOGITS b8",
            "s8|d1w16k3e2|LOGITS b8 mean|d1w16k3e2",
            "s8|d1w16k3e2|SPLIT c2 b2 max|LOGITS b8 mean",
        ] {
            assert!(bad.parse::<Arch>().is_err(), "{bad:?} is rejected");
        }
    }
}
