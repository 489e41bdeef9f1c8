//! The data a run trains and is tested on, CIFAR-10 or an ImageNet-style
//! image folder, behind what the training loop needs: the input normalisation
//! (computed, or read back from a checkpoint), the training batches and the
//! evaluations.
//!
//! | | CIFAR-10 | image folder |
//! |---|---|---|
//! | training | `data`'s training batches less `val_size` | `data/<class>/<image>` |
//! | validation (`val`) | the last `val_size` training images | none |
//! | `test` | the test batch | the centre crops of `val_data`, if given |
//! | plateau schedule watches | the validation error | `test`, else the recent training error |

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use resnet_data::{
    Augment, BadImagePolicy, Cifar10, CropGeometry, ImageFolder, ImageNetAugment,
    ImageNetNormalization, ImageNetTrainLoader, LoaderConfig, LoaderPosition, MeanImage,
    Normalization, PixelMean, Shard, Split, TestViews, TrainLoader, ViewConfig,
};
use resnet_eval::{EvalReport, Member};
use resnet_models::{ResNet, WeightsMetadata};
use resnet_ops::HostStaging;

use crate::config::{DatasetKind, NormalizationKind, TrainConfig};
use crate::{Result, TrainError};

/// Images per evaluation batch of CIFAR-10 (32x32).
const CIFAR_EVAL_BATCH: usize = 256;
/// Images per evaluation batch of an image folder (224x224 views).
const FOLDER_EVAL_BATCH: usize = 64;

/// A run's data, opened and checked, before its normalisation is fixed.
pub(crate) enum Dataset {
    /// CIFAR-10, its training set split into training and validation.
    Cifar {
        train: Split,
        val: Split,
        test: Split,
    },
    /// An image folder and its optional validation folder.
    Folder {
        train: ImageFolder,
        val: Option<ImageFolder>,
    },
}

impl Dataset {
    /// Checks that `config`'s batch makes at least one full batch of the
    /// training images, as [`RunData::train_loader`] does, before anything
    /// is written.
    pub(crate) fn check_batch(&self, config: &TrainConfig) -> Result<()> {
        let images = match self {
            Self::Cifar { train, .. } => train.len(),
            Self::Folder { train, .. } => train.len(),
        };
        loader_config(config, Shard::WHOLE).batches_per_epoch(images)?;
        Ok(())
    }

    /// Opens the data `config` names, checking every image header of an
    /// image folder and that its classes fit the network.
    pub(crate) fn open(config: &TrainConfig) -> Result<Self> {
        match config.dataset {
            DatasetKind::Cifar10 => {
                let data = Cifar10::load(&config.data)?;
                let (train, val) = data.train.split_off_validation(config.val_size)?;
                Ok(Self::Cifar {
                    train,
                    val,
                    test: data.test,
                })
            }
            DatasetKind::ImageFolder => {
                let policy = if config.skip_bad_images {
                    BadImagePolicy::Skip
                } else {
                    BadImagePolicy::Reject
                };
                let train = ImageFolder::open_with(&config.data, None, policy)?;
                let outputs = config.spec()?.num_classes;
                if config
                    .num_classes
                    .is_some_and(|n| n != train.classes().len())
                {
                    return Err(TrainError::InvalidConfig(format!(
                        "num_classes (--num-classes) is {outputs}, but {} has {} class folders",
                        config.data.display(),
                        train.classes().len()
                    )));
                }
                if train.classes().len() > outputs {
                    return Err(TrainError::TooManyClasses {
                        path: config.data.clone(),
                        classes: train.classes().len(),
                        arch: config.arch.clone(),
                        outputs,
                    });
                }
                let val = match &config.val_data {
                    Some(dir) => Some(open_val(dir, config.val_labels.as_deref(), &train, policy)?),
                    None => None,
                };
                Ok(Self::Folder { train, val })
            }
        }
    }

    /// The class names in label order: an image folder's class folders
    /// (CIFAR-10 runs leave them to the reader).
    pub(crate) fn classes(&self) -> Option<Vec<String>> {
        match self {
            Self::Cifar { .. } => None,
            Self::Folder { train, .. } => Some(train.classes().to_vec()),
        }
    }

    /// The input normalisation stored in a checkpoint's `normalization.*`
    /// tensors (read from `source`), checked against the kind of data.
    pub(crate) fn stored_normalization(
        &self,
        tensors: &HashMap<String, Tensor>,
        source: &str,
    ) -> Result<StoredNormalization> {
        let missing = || {
            TrainError::InvalidConfig(format!("{source}: checkpoint holds no input normalization"))
        };
        Ok(match self {
            Self::Cifar { .. } => StoredNormalization::Cifar(
                resnet_eval::normalization_from_tensors(tensors)?.ok_or_else(missing)?,
            ),
            Self::Folder { .. } => StoredNormalization::Folder(
                resnet_eval::imagenet_normalization_from_tensors(tensors)?.ok_or_else(missing)?,
            ),
        })
    }

    /// Fixes the input normalisation: the one a checkpoint stored (from
    /// [`Dataset::stored_normalization`]), or, for a fresh run, the one
    /// `config` asks for, computed from the training images.
    pub(crate) fn normalize(
        self,
        stored: Option<StoredNormalization>,
        config: &TrainConfig,
    ) -> Result<RunData> {
        match (self, stored) {
            (Self::Cifar { train, val, test }, stored) => {
                let norm = match stored {
                    Some(StoredNormalization::Cifar(norm)) => norm,
                    _ => cifar_normalization(config.normalization, &train)?,
                };
                Ok(RunData::Cifar {
                    train: Arc::new(train),
                    val: Arc::new(val),
                    test: Arc::new(test),
                    norm,
                })
            }
            (Self::Folder { train, val }, stored) => {
                let train = Arc::new(train);
                let norm = match stored {
                    Some(StoredNormalization::Folder(norm)) => norm,
                    _ => folder_normalization(config, &train)?,
                };
                Ok(RunData::Folder {
                    train,
                    val: val.map(Arc::new),
                    norm,
                })
            }
        }
    }
}

/// An input normalisation read back from a checkpoint.
pub(crate) enum StoredNormalization {
    /// A CIFAR-10 run's.
    Cifar(Normalization),
    /// An image-folder run's.
    Folder(ImageNetNormalization),
}

/// Opens the validation folder of an image-folder run: class folders with the
/// training folder's classes, or a flat folder labelled by `labels`.
fn open_val(
    dir: &Path,
    labels: Option<&Path>,
    train: &ImageFolder,
    policy: BadImagePolicy,
) -> Result<ImageFolder> {
    if let Some(labels) = labels {
        let classes = train.classes();
        return Ok(ImageFolder::open_flat(dir, labels, classes, policy)?);
    }
    let val = ImageFolder::open_with(dir, None, policy)?;
    let only_in = |a: &ImageFolder, b: &ImageFolder| {
        a.classes()
            .iter()
            .find(|c| !b.classes().contains(c))
            .cloned()
    };
    let detail = match (only_in(train, &val), only_in(&val, train)) {
        (Some(c), _) => format!("it has no class folder `{c}`"),
        (None, Some(c)) => format!("its class folder `{c}` is not a training class"),
        (None, None) => return Ok(val),
    };
    Err(TrainError::ValClassesDiffer {
        train: train.root().to_path_buf(),
        val: dir.to_path_buf(),
        detail,
    })
}

fn cifar_normalization(kind: NormalizationKind, train: &Split) -> Result<Normalization> {
    Ok(match kind {
        NormalizationKind::PerPixelMean => {
            Normalization::PerPixelMean(MeanImage::from_split(train)?)
        }
        NormalizationKind::PerChannel => Normalization::per_channel_from_split(train)?,
    })
}

fn folder_normalization(
    config: &TrainConfig,
    train: &Arc<ImageFolder>,
) -> Result<ImageNetNormalization> {
    Ok(match config.normalization {
        NormalizationKind::PerPixelMean => {
            tracing::info!(
                images = train.len(),
                "computing the per-pixel mean of the training images' centre views"
            );
            let mean = PixelMean::from_folder(Arc::clone(train), config.loader_threads)?;
            ImageNetNormalization::PerPixelMean(mean)
        }
        NormalizationKind::PerChannel => ImageNetNormalization::TORCHVISION,
    })
}

/// The loader options of `config`'s training batches, `shard` of each.
fn loader_config(config: &TrainConfig, shard: Shard) -> LoaderConfig {
    LoaderConfig {
        threads: config.loader_threads,
        shard,
        ..LoaderConfig::new(config.batch_size, config.seed)
    }
}

/// The training augmentation of an image folder: `image_augment`, or
/// without `augment` a fixed scale with no flip or colour change.
fn folder_augment(config: &TrainConfig) -> ImageNetAugment {
    let paper = config.image_augment;
    if config.augment {
        return paper;
    }
    ImageNetAugment {
        max_side: paper.min_side,
        flip: false,
        lighting_std: 0.0,
        ..paper
    }
}

/// A run's data with its input normalisation fixed.
pub(crate) enum RunData {
    /// CIFAR-10.
    Cifar {
        train: Arc<Split>,
        val: Arc<Split>,
        test: Arc<Split>,
        norm: Normalization,
    },
    /// An image folder.
    Folder {
        train: Arc<ImageFolder>,
        val: Option<Arc<ImageFolder>>,
        norm: ImageNetNormalization,
    },
}

/// The evaluations at one point of a run.
pub(crate) struct Evaluation {
    /// The validation split held out of CIFAR-10's training images.
    pub(crate) val: Option<EvalReport>,
    /// CIFAR-10's test split, or an image folder's validation folder.
    pub(crate) test: Option<EvalReport>,
}

impl RunData {
    /// Number of training images.
    pub(crate) fn train_images(&self) -> usize {
        match self {
            Self::Cifar { train, .. } => train.len(),
            Self::Folder { train, .. } => train.len(),
        }
    }

    /// The tensors that store the normalisation in checkpoints and weights.
    pub(crate) fn normalization_tensors(&self) -> Result<HashMap<String, Tensor>> {
        Ok(match self {
            Self::Cifar { norm, .. } => resnet_eval::normalization_tensors(norm)?,
            Self::Folder { norm, .. } => resnet_eval::imagenet_normalization_tensors(norm)?,
        })
    }

    /// The class names, in label order: an image folder's class folders
    /// (CIFAR-10 runs leave them to the reader).
    pub(crate) fn classes(&self) -> Option<Vec<String>> {
        match self {
            Self::Cifar { .. } => None,
            Self::Folder { train, .. } => Some(train.classes().to_vec()),
        }
    }

    /// The metadata of the weights `model` saves in this run: its spec, the
    /// class names where they name every output (a folder with fewer classes
    /// than the head has outputs leaves them to `config.json`) and a
    /// per-channel normalisation.
    pub(crate) fn weights_metadata(&self, model: &ResNet) -> WeightsMetadata {
        let classes = self
            .classes()
            .filter(|c| c.len() == model.spec().num_classes);
        let metadata = model.metadata().with_classes(classes);
        let per_channel = match self {
            Self::Cifar {
                norm: Normalization::PerChannel { mean, std },
                ..
            }
            | Self::Folder {
                norm: ImageNetNormalization::PerChannel { mean, std },
                ..
            } => Some((*mean, *std)),
            _ => None,
        };
        match per_channel {
            Some((mean, std)) => metadata.with_mean_std(mean, std),
            None => metadata,
        }
    }

    /// The endless training batches from `start`: the `shard` of each
    /// batch of `batch_size` images.
    pub(crate) fn train_loader(
        &self,
        config: &TrainConfig,
        start: LoaderPosition,
        shard: Shard,
    ) -> Result<TrainBatches> {
        let loader_config = loader_config(config, shard);
        Ok(TrainBatches::new(match self {
            Self::Cifar { train, norm, .. } => {
                let augment = if config.augment {
                    Augment::PAPER
                } else {
                    Augment::NONE
                };
                let loader = TrainLoader::new(
                    Arc::clone(train),
                    norm.clone(),
                    augment,
                    loader_config,
                    start,
                )?;
                TrainLoaders::Cifar(loader)
            }
            Self::Folder { train, norm, .. } => TrainLoaders::Folder(ImageNetTrainLoader::new(
                Arc::clone(train),
                norm.clone(),
                folder_augment(config),
                loader_config,
                start,
            )?),
        }))
    }

    /// Evaluates `model` on the validation and test data there are.
    pub(crate) fn evaluate(
        &self,
        model: &ResNet,
        threads: usize,
        device: &Device,
    ) -> Result<Evaluation> {
        match self {
            Self::Cifar {
                val, test, norm, ..
            } => {
                let split = |split: &Arc<Split>| -> Result<EvalReport> {
                    Ok(resnet_eval::evaluate(
                        model,
                        Arc::clone(split),
                        norm,
                        CIFAR_EVAL_BATCH,
                        threads,
                        device,
                    )?)
                };
                Ok(Evaluation {
                    val: (!val.is_empty()).then(|| split(val)).transpose()?,
                    test: Some(split(test)?),
                })
            }
            Self::Folder { val, norm, .. } => Ok(Evaluation {
                val: None,
                test: val
                    .as_ref()
                    .map(|folder| {
                        // The centre views torchvision evaluates on, normalised
                        // as in training.
                        let member = Member {
                            model,
                            views: ViewConfig {
                                geometry: CropGeometry::STANDARD,
                                normalization: norm.clone(),
                            },
                        };
                        resnet_eval::evaluate_folder(
                            &[member],
                            Arc::clone(folder),
                            &TestViews::Center,
                            FOLDER_EVAL_BATCH,
                            threads,
                            device,
                        )
                    })
                    .transpose()?,
            }),
        }
    }

    /// The error a plateau schedule observes after `evaluation`: CIFAR-10's
    /// validation error (none without a validation split); an image folder's
    /// validation-folder error, or without one `recent_train_error`, the
    /// mean training error of the latest batches.
    pub(crate) fn plateau_error(
        &self,
        evaluation: &Evaluation,
        recent_train_error: Option<f64>,
    ) -> Option<f64> {
        match self {
            Self::Cifar { .. } => evaluation.val.as_ref().map(|r| r.top1_error),
            Self::Folder { .. } => evaluation
                .test
                .as_ref()
                .map(|r| r.top1_error)
                .or(recent_train_error),
        }
    }
}

/// The training loader of either dataset.
pub(crate) enum TrainLoaders {
    /// Over CIFAR-10.
    Cifar(TrainLoader),
    /// Over an image folder.
    Folder(ImageNetTrainLoader),
}

/// The training batches on the device, in the loader's order; the next one
/// may be moved there ahead of its step ([`TrainBatches::prefetch`]).
pub(crate) struct TrainBatches {
    loader: TrainLoaders,
    ahead: Option<Result<StepBatch>>,
    /// Page-locked host buffers for the images' copies to a GPU.
    staging: HostStaging,
}

/// One training batch on the device.
pub(crate) struct StepBatch {
    /// Where the loader continues after this batch.
    pub(crate) position: LoaderPosition,
    /// The images, `[B, 3, H, W]`.
    pub(crate) images: Tensor,
    /// The class indices, `[B]`.
    pub(crate) labels: Tensor,
    /// `B`.
    pub(crate) size: usize,
}

impl TrainBatches {
    /// The batches of `loader`.
    pub(crate) fn new(loader: TrainLoaders) -> Self {
        Self {
            loader,
            ahead: None,
            staging: HostStaging::default(),
        }
    }

    /// The next batch, moved to `device` (by [`TrainBatches::prefetch`] or
    /// now); an image that fails to decode is an error naming its file.
    pub(crate) fn next_batch(&mut self, device: &Device) -> Result<StepBatch> {
        self.ahead.take().unwrap_or_else(|| self.load(device))
    }

    /// Moves the next batch to `device` now, for [`TrainBatches::next_batch`]
    /// to return (with its error, if it fails). Called once a step's work is
    /// queued on a GPU and before its results are read back, the batch's
    /// copy to the GPU overlaps that work instead of waiting for it and then
    /// holding up the next step.
    pub(crate) fn prefetch(&mut self, device: &Device) {
        if self.ahead.is_none() {
            self.ahead = Some(self.load(device));
        }
    }

    /// The loader's next batch, moved to `device` (the images through
    /// page-locked buffers on a GPU, [`HostStaging`]).
    fn load(&mut self, device: &Device) -> Result<StepBatch> {
        let (position, (images, dims), labels) = match &mut self.loader {
            TrainLoaders::Cifar(loader) => {
                let (position, batch) = loader.next().ok_or(TrainError::LoaderStopped)?;
                let dims = batch.dims()?;
                (position, (batch.images, dims), batch.labels)
            }
            TrainLoaders::Folder(loader) => {
                let (position, batch) = loader.next().ok_or(TrainError::LoaderStopped)??;
                let dims = batch.dims()?;
                (position, (batch.images, dims), batch.labels)
            }
        };
        Ok(StepBatch {
            position,
            images: self.staging.to_device(&images, &dims, device)?,
            size: labels.len(),
            labels: Tensor::from_vec(labels, dims[0], device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use resnet_data::{LoaderPosition, Shard};

    use super::{Dataset, TrainBatches};
    use crate::TrainConfig;

    /// The training batches of the bundled sample, batch 4, from the start.
    fn batches() -> TrainBatches {
        let config = TrainConfig {
            data: resnet_test_support::cifar_sample(),
            batch_size: 4,
            ..TrainConfig::default()
        };
        let data = Dataset::open(&config)
            .unwrap()
            .normalize(None, &config)
            .unwrap();
        let whole = Shard { index: 0, count: 1 };
        data.train_loader(&config, LoaderPosition::default(), whole)
            .unwrap()
    }

    #[test]
    fn a_prefetched_batch_is_the_next_one_and_is_fetched_once() {
        let cpu = Device::Cpu;
        let mut plain = batches();
        let expected: Vec<_> = (0..4).map(|_| plain.next_batch(&cpu).unwrap()).collect();
        let mut ahead = batches();
        let mut got = vec![ahead.next_batch(&cpu).unwrap()];
        ahead.prefetch(&cpu);
        ahead.prefetch(&cpu);
        got.push(ahead.next_batch(&cpu).unwrap());
        ahead.prefetch(&cpu);
        got.push(ahead.next_batch(&cpu).unwrap());
        got.push(ahead.next_batch(&cpu).unwrap());
        for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(a.position, b.position, "batch {i}");
            let diff = resnet_test_support::max_abs_diff(&a.images, &b.images);
            assert_eq!(diff, 0.0, "batch {i}");
        }
    }
}
