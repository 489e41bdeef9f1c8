//! The ranks (world size) and batch-norm groups a result trained with,
//! beside the paper's: its CIFAR-10 nets trained on 2 GPUs of 64 images and
//! its ImageNet nets on 8 of 32, each GPU normalising its own images.
//!
//! N ranks of B/N images train as one process with `--bn-group B/N` (up to
//! float rounding; docs/distributed.md, measured by the MPI tests of
//! `resnet-cli`), so a world size unlike the paper's is no deviation by
//! itself: batch-norm groups unlike the paper's are (`bn-batch`).

use serde::Serialize;

use crate::deviation::Deviation;

/// The paper's data-parallel setup for one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PaperSetup {
    /// GPUs.
    pub world_size: usize,
    /// Images per step, over all GPUs.
    pub batch_size: usize,
    /// Images each GPU normalised with its own batch-norm statistics.
    pub bn_images: usize,
}

impl PaperSetup {
    /// CIFAR-10 (Section 4.2): 2 GPUs of 64 images, a batch of 128.
    pub const CIFAR10: PaperSetup = PaperSetup {
        world_size: 2,
        batch_size: 128,
        bn_images: 64,
    };

    /// ImageNet (Section 3.4): 8 GPUs of 32 images, a batch of 256.
    pub const IMAGENET: PaperSetup = PaperSetup {
        world_size: 8,
        batch_size: 256,
        bn_images: 32,
    };
}

/// How the runs behind a result split their batches, with the paper's setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parallelism {
    /// The ranks (processes) the runs trained on, read from their
    /// `config.json`: each value once, ascending, so one value when every run
    /// trained on as many. The reproductions train in one process (1); a
    /// finished run they reuse may have trained under `mpirun`.
    pub world_sizes: Vec<usize>,
    /// Images per step, over all ranks.
    pub batch_size: usize,
    /// The runs' `--bn-group` (None: each rank normalises its whole share).
    pub bn_group: Option<usize>,
    /// Images per batch-norm group in training, for each of `world_sizes`:
    /// `bn_group`, or else each rank's share of the batch.
    pub bn_images: Vec<usize>,
    /// The paper's setup.
    pub paper: PaperSetup,
    /// Whether every run normalised as the paper's GPUs did (groups of as
    /// many images of as large a batch): it then trained as the paper's
    /// setup does, up to float rounding, whatever its world size.
    pub as_paper: bool,
}

impl Parallelism {
    /// The parallelism of runs that trained on `world_sizes` ranks (none
    /// given: one process) with batches of `batch_size` and `bn_group`.
    pub fn new(
        world_sizes: &[usize],
        batch_size: usize,
        bn_group: Option<usize>,
        paper: PaperSetup,
    ) -> Parallelism {
        let mut world_sizes: Vec<usize> = world_sizes.iter().map(|&w| w.max(1)).collect();
        world_sizes.sort_unstable();
        world_sizes.dedup();
        if world_sizes.is_empty() {
            world_sizes.push(1);
        }
        let bn_images: Vec<usize> = world_sizes
            .iter()
            .map(|&w| bn_group.unwrap_or(batch_size / w))
            .collect();
        let as_paper =
            batch_size == paper.batch_size && bn_images.iter().all(|&n| n == paper.bn_images);
        Parallelism {
            world_sizes,
            batch_size,
            bn_group,
            bn_images,
            paper,
            as_paper,
        }
    }

    /// What the batch-norm groups of a run on `world_size` ranks were, in words.
    fn groups(&self, world_size: usize) -> String {
        let share = self.batch_size / world_size;
        match (self.bn_group, world_size) {
            (Some(g), 1) => format!("groups of {g} images (`--bn-group {g}`)"),
            (Some(g), w) => format!("groups of {g} of each of {w} ranks' {share} images"),
            (None, 1) => format!("the whole batch of {} images", self.batch_size),
            (None, w) => format!("each of {w} ranks' {share} images"),
        }
    }

    /// The batch-norm groups of every world size the runs had, in words.
    fn all_groups(&self) -> String {
        self.world_sizes
            .iter()
            .map(|&w| self.groups(w))
            .collect::<Vec<_>>()
            .join(", or ")
    }

    /// The paper's setup in words.
    fn paper_words(&self) -> String {
        let p = self.paper;
        format!(
            "the paper's {} GPUs each normalised their {} images of {}",
            p.world_size, p.bn_images, p.batch_size
        )
    }

    /// The world size and batch-norm groups beside the paper's, as a
    /// Markdown paragraph; where they differ from the paper's, the
    /// `bn-batch` deviation says how.
    pub fn markdown(&self) -> String {
        let worlds = match self.world_sizes.as_slice() {
            [1] => "world size 1 (one process)".to_string(),
            [w] => format!("world size {w} (data-parallel ranks)"),
            many => format!(
                "world sizes {} (the runs differ)",
                many.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        };
        let groups = self.all_groups();
        let p = self.paper;
        let verdict = if !self.as_paper {
            "not the paper's batch-norm groups (`bn-batch` below)".to_string()
        } else if self.world_sizes == [p.world_size] {
            "the paper's setup".to_string()
        } else {
            format!(
                "the paper's setup: N ranks of B/N images train as one process with \
                 `--bn-group B/N` (up to float rounding; docs/distributed.md), so this is the \
                 equivalent of {} ranks of {}",
                p.world_size, p.bn_images
            )
        };
        format!(
            "_Parallelism: {worlds}, batch {}, batch norm over {groups}; the paper: {} GPUs x {} \
             images, batch norm per GPU. Here: {verdict}._\n",
            self.batch_size, p.world_size, p.bn_images
        )
    }

    /// The `bn-batch` deviation: batch-norm groups unlike the paper's GPUs';
    /// `None` when they are the paper's.
    pub fn deviation(&self) -> Option<Deviation> {
        if self.as_paper {
            return None;
        }
        let p = self.paper;
        let groups = self.all_groups();
        let whole_batch = self.bn_group.is_none() && self.world_sizes == [1];
        let of_batch = match whole_batch {
            true => String::new(),
            false => format!(" of a batch of {}", self.batch_size),
        };
        let mut text = format!(
            "batch-norm statistics over {groups}{of_batch}; {}",
            self.paper_words()
        );
        if self.bn_group.is_none() && self.world_sizes.contains(&1) {
            text.push_str(&format!(
                " (--bn-group {} does that on one device)",
                p.bn_images
            ));
        }
        Some(Deviation::new("bn-batch", text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_with_the_papers_groups_is_the_papers_setup() {
        let one = Parallelism::new(&[1], 128, Some(64), PaperSetup::CIFAR10);
        assert!(one.as_paper);
        assert_eq!(one.deviation(), None);
        assert_eq!(
            (one.world_sizes.as_slice(), one.bn_images.as_slice()),
            (&[1][..], &[64][..])
        );
        let md = one.markdown();
        for part in [
            "world size 1 (one process)",
            "batch 128",
            "groups of 64 images",
            "the paper: 2 GPUs x 64 images",
            "equivalent of 2 ranks of 64",
            "--bn-group B/N",
        ] {
            assert!(md.contains(part), "{part}: {md}");
        }
        // Two ranks of 64, each normalising its share: the paper's own setup.
        let two = Parallelism::new(&[2, 2], 128, None, PaperSetup::CIFAR10);
        assert!(two.as_paper && two.deviation().is_none());
        assert_eq!(two.world_sizes, [2]);
        let md = two.markdown();
        assert!(
            md.contains("world size 2 (data-parallel ranks)")
                && md.contains("each of 2 ranks' 64 images")
                && md.contains("Here: the paper's setup."),
            "{md}"
        );
    }

    #[test]
    fn other_groups_are_a_deviation_naming_the_papers_gpus() {
        let whole = Parallelism::new(&[], 128, None, PaperSetup::CIFAR10);
        assert_eq!(whole.world_sizes, [1]);
        assert!(!whole.as_paper);
        let d = whole.deviation().unwrap();
        assert_eq!(d.id, "bn-batch");
        assert_eq!(
            d.text,
            "batch-norm statistics over the whole batch of 128 images; the paper's 2 GPUs each \
             normalised their 64 images of 128 (--bn-group 64 does that on one device)"
        );
        for part in ["whole batch of 128", "2 GPUs", "--bn-group 64 does that"] {
            assert!(d.text.contains(part), "{part}: {}", d.text);
        }
        assert!(whole.markdown().contains("`bn-batch` below"));
        let other = Parallelism::new(&[1], 128, Some(32), PaperSetup::CIFAR10);
        let d = other.deviation().unwrap();
        assert!(
            d.text
                .contains("groups of 32 images (`--bn-group 32`) of a batch of 128"),
            "{}",
            d.text
        );
        // Runs on 1 and on 4 ranks, without groups: 128 and 32 images.
        let mixed = Parallelism::new(&[4, 1], 128, None, PaperSetup::CIFAR10);
        assert_eq!(mixed.bn_images, [128, 32]);
        let d = mixed.deviation().unwrap();
        assert!(d.text.contains("each of 4 ranks' 32 images"), "{}", d.text);
        assert!(mixed.markdown().contains("world sizes 1 and 4"));
        // The paper's groups of a smaller batch are not its setup.
        let small = Parallelism::new(&[1], 64, Some(64), PaperSetup::CIFAR10);
        assert!(small.deviation().is_some());
        let imagenet = Parallelism::new(&[1], 256, None, PaperSetup::IMAGENET);
        let d = imagenet.deviation().unwrap();
        assert!(
            d.text
                .contains("8 GPUs each normalised their 32 images of 256"),
            "{}",
            d.text
        );
        assert!(Parallelism::new(&[1], 256, Some(32), PaperSetup::IMAGENET).as_paper);
    }
}
