//! Training pieces for the ResNet reference implementation.
//!
//! * [`sgd`]: stochastic gradient descent with momentum and weight decay, with
//!   exactly the semantics of PyTorch's `torch.optim.SGD` (the optimizer of the
//!   paper, He et al. 2015, section 3.4 and section 4.2), and a state that can
//!   be checkpointed and resumed bit for bit.
//! * [`schedule`]: the paper's learning-rate schedules: the CIFAR-10 step
//!   schedule, the ResNet-110 warm-up and the ImageNet "divide by 10 when the
//!   error plateaus" rule, with a serialisable state for resuming.
//! * [`trainer`]: the loop that steps, evaluates, logs ([`metrics`]) and
//!   checkpoints ([`checkpoint`]) a run in its own folder ([`run_dir`]), from a
//!   [`config::TrainConfig`], resumable bit for bit on the CPU, and sums it up
//!   ([`summary`]). It trains on CIFAR-10 ([`TrainConfig::default`], the
//!   paper's CIFAR-10 recipe) or on an ImageNet-style image folder
//!   ([`TrainConfig::imagenet`], the paper's ImageNet recipe).
//! * [`collective`]: the ranks of a data-parallel run (one process, or an
//!   MPI job with feature `mpi`), which [`train_data_parallel`] splits every
//!   batch over.

pub mod checkpoint;
pub mod collective;
pub mod config;
mod dataset;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod run_dir;
pub mod schedule;
pub mod sgd;
pub mod summary;
pub mod trainer;

pub use config::{DatasetKind, Freeze, NormalizationKind, TrainConfig};
pub use error::{Result, TrainError};
pub use metrics::{read_metrics, MetricRecord};
pub use schedule::{LrSchedule, PlateauState, ScheduleConfig, Scheduler, SchedulerState, Warmup};
pub use sgd::{Sgd, SgdConfig, UpdateRule};
pub use summary::RunSummary;
pub use trainer::{
    build_model, load_initial_weights, resume, resume_data_parallel, train, train_data_parallel,
    NoObserver, TrainObserver,
};
