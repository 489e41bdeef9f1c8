//! Seeded, deterministic, resumable, multi-threaded batch loaders.
//!
//! Training batches depend only on `(seed, epoch, batch index)`: the epoch's
//! permutation is drawn from a ChaCha8 generator seeded with `(seed, epoch)`,
//! and each sample's crop and flip from one seeded with `(seed, epoch, position
//! in the epoch)`. So the same seed yields the same batches whatever the thread
//! count, and a loader started at any [`LoaderPosition`] yields exactly what an
//! uninterrupted one would have yielded from there.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{Augment, CropFlip};
use crate::batch::Batch;
use crate::cifar::{Split, IMAGE_BYTES};
use crate::error::{DataError, Result};
use crate::normalize::Normalization;
use crate::prefetch::Prefetcher;

/// Domain tag of the generator that draws an epoch's permutation.
const PERMUTATION_STREAM: u64 = 1;
/// Domain tag of the generators that draw per-sample augmentation.
const AUGMENT_STREAM: u64 = 2;

/// A point in the infinite sequence of training batches.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LoaderPosition {
    /// The epoch, from 0.
    pub epoch: u64,
    /// The batch index within the epoch, in `0..batches_per_epoch`.
    pub batch: u64,
}

/// Options of a [`TrainLoader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch (> 0).
    pub batch_size: usize,
    /// Seed of the permutations and augmentation.
    pub seed: u64,
    /// Worker threads (> 0). Does not affect the batches produced.
    pub threads: usize,
    /// Batches prepared ahead of the consumer (at least one per worker).
    pub prefetch: usize,
    /// Whether to drop each epoch's last incomplete batch.
    pub drop_last: bool,
    /// The part of every batch this loader yields: one rank's share of the
    /// global batch in data-parallel training (the whole batch by default).
    #[serde(default)]
    pub shard: Shard,
}

/// Part `index` of `count` contiguous, near-equal parts of every batch: the
/// permutation and each sample's augmentation are those of the whole batch,
/// so the parts of all `count` loaders together are exactly its samples, in
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which part, in `0..count`.
    pub index: usize,
    /// Number of parts (> 0).
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl Shard {
    /// The whole batch.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The range of positions `0..len` of a batch of `len` samples that
    /// this part holds: `len * index / count .. len * (index + 1) / count`.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        len * self.index / self.count..len * (self.index + 1) / self.count
    }

    fn checked(self) -> Result<Self> {
        if self.count == 0 || self.index >= self.count {
            return Err(DataError::InvalidOption {
                name: "shard",
                value: format!("{} of {}", self.index, self.count),
                expected: "a part index below a part count > 0".into(),
            });
        }
        Ok(self)
    }
}

impl LoaderConfig {
    /// `batch_size` and `seed` with 2 threads, 4 batches of prefetch,
    /// `drop_last`, and the whole batch.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            seed,
            threads: 2,
            prefetch: 4,
            drop_last: true,
            shard: Shard::WHOLE,
        }
    }

    /// The batches of an epoch over `len` samples: a `batch_size` of 0, or
    /// one that makes no full batch of them, is an error naming it. A
    /// [`TrainLoader`] checks this when it is made; a trainer can check it
    /// before it writes anything.
    pub fn batches_per_epoch(&self, len: usize) -> Result<u64> {
        positive("batch_size", self.batch_size)?;
        let per_epoch = if self.drop_last {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        };
        if per_epoch == 0 {
            return Err(DataError::InvalidOption {
                name: "batch_size",
                value: self.batch_size.to_string(),
                expected: format!(
                    "at most the {len} images of the split (to make at least one full batch)"
                ),
            });
        }
        Ok(per_epoch as u64)
    }
}

/// A generator seeded from `(seed, epoch, index)` and a domain tag.
fn stream_rng(seed: u64, epoch: u64, index: u64, domain: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, v) in key.chunks_exact_mut(8).zip([seed, epoch, index, domain]) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// The order in which epoch `epoch` visits the `n` samples.
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut stream_rng(seed, epoch, 0, PERMUTATION_STREAM));
    order
}

/// Builds a batch from `(sample index, augmentation)` pairs.
fn build_batch(
    split: &Split,
    norm: &Normalization,
    samples: impl ExactSizeIterator<Item = (usize, CropFlip)>,
) -> Batch {
    let mut images = Vec::with_capacity(samples.len() * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(samples.len());
    let mut scratch = vec![0f32; IMAGE_BYTES];
    for (i, aug) in samples {
        let (Some(image), Some(label)) = (split.image(i), split.label(i)) else {
            continue; // Callers only pass indices below `split.len()`.
        };
        let start = images.len();
        images.resize(start + IMAGE_BYTES, 0.0);
        let out = &mut images[start..];
        if aug == CropFlip::IDENTITY {
            norm.apply(image, out);
        } else {
            norm.apply(image, &mut scratch);
            aug.apply(&scratch, out);
        }
        labels.push(u32::from(label));
    }
    Batch {
        images,
        batch_size: labels.len(),
        labels,
    }
}

/// Checks `value > 0` for option `name`.
pub(crate) fn positive(name: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(DataError::InvalidOption {
            name,
            value: "0".into(),
            expected: "a value > 0".into(),
        });
    }
    Ok(())
}

/// The training schedule shared by the loaders: which samples, in which order,
/// each with its own generator, make up the batch with a given global number.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    seed: u64,
    batch_size: usize,
    len: usize,
    per_epoch: u64,
    shard: Shard,
    /// The global number (`epoch * per_epoch + batch`) of the first batch.
    first: u64,
    cached: Option<(u64, Vec<u32>)>,
}

impl Schedule {
    /// Checks `config` and `start` against a dataset of `len` samples.
    pub(crate) fn new(len: usize, config: &LoaderConfig, start: LoaderPosition) -> Result<Self> {
        let per_epoch = config.batches_per_epoch(len)?;
        positive("threads", config.threads)?;
        let shard = config.shard.checked()?;
        if start.batch >= per_epoch {
            return Err(DataError::InvalidOption {
                name: "start batch",
                value: start.batch.to_string(),
                expected: format!("a batch index below the {per_epoch} batches per epoch"),
            });
        }
        let first = start
            .epoch
            .checked_mul(per_epoch)
            .and_then(|b| b.checked_add(start.batch))
            .ok_or_else(|| DataError::InvalidOption {
                name: "start epoch",
                value: start.epoch.to_string(),
                expected: "an epoch whose first batch number fits in 64 bits".into(),
            })?;
        Ok(Self {
            seed: config.seed,
            batch_size: config.batch_size,
            len,
            per_epoch,
            shard,
            first,
            cached: None,
        })
    }

    /// Number of batches in one epoch.
    pub(crate) fn per_epoch(&self) -> u64 {
        self.per_epoch
    }

    /// The global number of the first batch.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// The position of the batch with global number `global`.
    pub(crate) fn position(&self, global: u64) -> LoaderPosition {
        LoaderPosition {
            epoch: global / self.per_epoch,
            batch: global % self.per_epoch,
        }
    }

    /// The samples of this loader's shard of the `k`-th batch from the start,
    /// each with its augmentation generator; `None` once the global batch
    /// number overflows.
    pub(crate) fn batch(&mut self, k: u64) -> Option<Vec<(usize, ChaCha8Rng)>> {
        let LoaderPosition { epoch, batch } = self.position(self.first.checked_add(k)?);
        if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.cached = Some((epoch, epoch_permutation(self.seed, epoch, self.len)));
        }
        let order = &self.cached.as_ref()?.1;
        let lo = batch as usize * self.batch_size;
        let hi = (lo + self.batch_size).min(order.len());
        let part = self.shard.range(hi - lo);
        let samples = (lo + part.start..lo + part.end).map(|pos| {
            let rng = stream_rng(self.seed, epoch, pos as u64, AUGMENT_STREAM);
            (order[pos] as usize, rng)
        });
        Some(samples.collect())
    }
}

/// An endless, shuffled, augmented sequence of training batches, prepared in
/// background threads.
///
/// Yields `(resume_position, batch)`, where `resume_position` is the position
/// just after `batch`: a loader started there continues with the next batch, so
/// it is what a checkpoint should store. Dropping the loader stops its threads.
pub struct TrainLoader {
    schedule: Schedule,
    next_global: u64,
    inner: Prefetcher<Batch>,
}

impl TrainLoader {
    /// Starts a loader over `split` at position `start`.
    pub fn new(
        split: Arc<Split>,
        normalization: Normalization,
        augment: Augment,
        config: LoaderConfig,
        start: LoaderPosition,
    ) -> Result<Self> {
        let normalization = Arc::new(normalization.checked()?);
        let schedule = Schedule::new(split.len(), &config, start)?;
        let inner = Prefetcher::spawn("train-loader", config.threads, config.prefetch, || {
            let (split, norm) = (Arc::clone(&split), Arc::clone(&normalization));
            let mut schedule = schedule.clone();
            move |k: u64| {
                let samples = schedule.batch(k)?;
                let samples = samples
                    .into_iter()
                    .map(|(i, mut rng)| (i, augment.sample(&mut rng)));
                Some(build_batch(&split, &norm, samples))
            }
        })?;
        Ok(Self {
            next_global: schedule.first(),
            schedule,
            inner,
        })
    }

    /// Number of batches in one epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.schedule.per_epoch()
    }
}

impl Iterator for TrainLoader {
    type Item = (LoaderPosition, Batch);

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.inner.next()?;
        self.next_global += 1;
        Some((self.schedule.position(self.next_global), batch))
    }
}

/// The batches of a split in order, normalised, without augmentation, the last
/// one possibly short; prepared in background threads.
pub struct EvalLoader {
    num_batches: usize,
    inner: Prefetcher<Batch>,
}

impl EvalLoader {
    /// Starts a loader over `split` with `threads` workers.
    pub fn new(
        split: Arc<Split>,
        normalization: Normalization,
        batch_size: usize,
        threads: usize,
    ) -> Result<Self> {
        let normalization = Arc::new(normalization.checked()?);
        positive("batch_size", batch_size)?;
        positive("threads", threads)?;
        let num_batches = split.len().div_ceil(batch_size);
        let inner = Prefetcher::spawn("eval-loader", threads, 2 * threads, || {
            let (split, norm) = (Arc::clone(&split), Arc::clone(&normalization));
            move |k: u64| {
                let lo = usize::try_from(k).ok()?.checked_mul(batch_size)?;
                if lo >= split.len() {
                    return None;
                }
                let hi = (lo + batch_size).min(split.len());
                Some(build_batch(
                    &split,
                    &norm,
                    (lo..hi).map(|i| (i, CropFlip::IDENTITY)),
                ))
            }
        })?;
        Ok(Self { num_batches, inner })
    }

    /// Number of batches this loader yields in all.
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }
}

impl Iterator for EvalLoader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.inner.next()
    }
}
