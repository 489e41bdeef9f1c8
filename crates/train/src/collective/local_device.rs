//! The GPU of each rank: `--device cuda` without an index, in a run of
//! several ranks, is the rank's own GPU, by its index among the ranks of its
//! node as the launcher gives it (what DDP's `torch.cuda.set_device(local_rank)`
//! does).

use super::CollectiveError;

/// The variables launchers set to a rank's index among the ranks of its
/// node, in the order they are read: torchrun's, Open MPI's, MPICH's,
/// MVAPICH's and Slurm's (`srun`).
const LOCAL_RANK_VARIABLES: [&str; 5] = [
    "LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
];

/// The device this rank opens for the run's `device` on `world_size` ranks:
/// `cuda` becomes `cuda:N` with N the rank's local rank, read from the
/// launcher's variables; any other device (an indexed GPU, the CPU) and any
/// device of a one-rank run is kept as it is.
pub fn rank_device(device: &str, world_size: usize) -> Result<String, CollectiveError> {
    rank_device_with(device, world_size, |name| std::env::var(name).ok())
}

/// [`rank_device`] with the environment read through `var`.
fn rank_device_with(
    device: &str,
    world_size: usize,
    var: impl Fn(&str) -> Option<String>,
) -> Result<String, CollectiveError> {
    if device != "cuda" || world_size <= 1 {
        return Ok(device.to_string());
    }
    let Some((name, value)) = LOCAL_RANK_VARIABLES
        .iter()
        .find_map(|&name| Some((name, var(name)?)))
    else {
        return Err(CollectiveError::Setup(format!(
            "--device cuda on {world_size} ranks: no launcher variable gives this rank's \
             index on its node (looked for {}); name each rank's GPU instead, e.g. \
             --device cuda:$LOCAL_RANK",
            LOCAL_RANK_VARIABLES.join(", ")
        )));
    };
    let local_rank: usize = value.trim().parse().map_err(|_| {
        CollectiveError::Setup(format!(
            "--device cuda on {world_size} ranks: {name} is `{value}`, expected a rank's \
             index on its node (0, 1, ...)"
        ))
    })?;
    Ok(format!("cuda:{local_rank}"))
}

#[cfg(test)]
mod tests {
    use super::rank_device_with;

    /// An environment of `pairs`.
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn an_unindexed_gpu_is_the_local_rank_of_each_launcher() {
        for name in [
            "LOCAL_RANK",
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "SLURM_LOCALID",
        ] {
            let device = rank_device_with("cuda", 8, env(&[(name, "3")])).unwrap();
            assert_eq!(device, "cuda:3", "{name}");
        }
        // torchrun's variable is read before the MPI launcher's.
        let both = env(&[("OMPI_COMM_WORLD_LOCAL_RANK", "1"), ("LOCAL_RANK", "2")]);
        assert_eq!(rank_device_with("cuda", 4, both).unwrap(), "cuda:2");
    }

    #[test]
    fn named_devices_and_one_rank_runs_keep_their_device() {
        let local = env(&[("LOCAL_RANK", "5")]);
        for device in ["cuda:1", "cpu", "metal"] {
            assert_eq!(rank_device_with(device, 2, &local).unwrap(), device);
        }
        assert_eq!(rank_device_with("cuda", 1, &local).unwrap(), "cuda");
    }

    #[test]
    fn a_missing_or_bad_local_rank_is_an_error_naming_it() {
        let err = rank_device_with("cuda", 2, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--device cuda on 2 ranks"), "{err}");
        assert!(
            err.contains("LOCAL_RANK") && err.contains("cuda:$LOCAL_RANK"),
            "{err}"
        );
        let err = rank_device_with("cuda", 2, env(&[("SLURM_LOCALID", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SLURM_LOCALID is `x`"), "{err}");
    }
}
