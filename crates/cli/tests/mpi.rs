//! `mpirun -n 2 resnet train` (feature `mpi`; needs Open MPI's `mpirun`):
//! two ranks of 64 images train as one process with `--bn-group 64`; rank 1
//! writes nothing; a rank killed mid-run ends the job with the rank named,
//! and the run resumes on two ranks bit-identical to an uninterrupted one; a
//! rank that hangs makes the others give up after `--collective-timeout`; a
//! job stopped with SIGTERM or SIGUSR1 to `mpirun` saves a checkpoint that
//! every rank stopped at, and resumes bit-identical.
//!
//! The jobs' output goes to files, not pipes: a job that is waited on
//! without being read from would block once a pipe is full.
#![cfg(feature = "mpi")]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use resnet_test_support::assert_bit_identical;
use resnet_test_support::process::{send_signal, wait_for_a_record};

mod data_parallel;
use data_parallel::{
    assert_ended_by_the_kill, assert_resumed_alike, assert_stopped_with_a_checkpoint,
    assert_trained_alike, spawn_logged, succeed, train_args, train_one_process, wait_at_most,
    wait_for_a_checkpoint, weights,
};

/// `mpirun` with 2 slots on this machine whatever its cores, passing
/// `RAYON_NUM_THREADS=1` to the ranks.
fn mpirun() -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-x",
        "RAYON_NUM_THREADS",
    ])
    .env("RAYON_NUM_THREADS", "1");
    cmd
}

/// `mpirun -n 2 resnet train --resume --out run`, which must succeed.
fn resume_on_two_ranks(run: &Path) {
    let mut resume = mpirun();
    resume
        .args(["-n", "2", env!("CARGO_BIN_EXE_resnet")])
        .args(["train", "--resume", "--out"])
        .arg(run);
    succeed(resume);
}

#[test]
fn two_ranks_of_64_train_as_one_process_with_bn_groups_of_64() {
    let dir = tempfile::tempdir().unwrap();
    let (single, parallel, rank1) = (
        dir.path().join("single"),
        dir.path().join("parallel"),
        dir.path().join("rank1"),
    );
    train_one_process(&single);
    // Rank 1 is given a folder of its own (MPMD launch), to show that it
    // writes nothing.
    let mut two = mpirun();
    two.args(["-n", "1", env!("CARGO_BIN_EXE_resnet")])
        .args(train_args(&parallel, 128, 2, 1))
        .args([":", "-n", "1", env!("CARGO_BIN_EXE_resnet")])
        .args(train_args(&rank1, 128, 2, 1));
    let out = succeed(two);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("resnet20: 2 iterations").count(),
        1,
        "{stdout}"
    );
    assert!(!rank1.exists(), "rank 1 wrote {}", rank1.display());

    assert_trained_alike(&single, &parallel);
}

/// The pids of the ranks of the `mpirun` with pid `launcher`, by rank.
fn rank_pids(launcher: u32) -> HashMap<u32, u32> {
    let mut pids = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`; comm may hold spaces, not ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent != Some(launcher) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let rank = environ
            .split(|&b| b == 0)
            .filter_map(|var| std::str::from_utf8(var).ok())
            .find_map(|var| var.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .and_then(|rank| rank.parse().ok());
        if let Some(rank) = rank {
            pids.insert(rank, pid);
        }
    }
    pids
}

/// Rank 1 is killed right after the first checkpoint: a run of 120 steps
/// leaves a margin for a test that runs late under load.
#[test]
fn a_killed_rank_ends_the_job_with_its_rank_named_and_the_run_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, killed) = (dir.path().join("whole"), dir.path().join("killed"));
    let (batch, iterations, checkpoint_every) = (16, 120, 4);
    let mut uninterrupted = mpirun();
    uninterrupted
        .args(["-n", "2", env!("CARGO_BIN_EXE_resnet")])
        .args(train_args(&whole, batch, iterations, checkpoint_every));
    succeed(uninterrupted);

    let mut job = mpirun();
    job.args(["-n", "2", env!("CARGO_BIN_EXE_resnet")])
        .args(train_args(&killed, batch, iterations, checkpoint_every));
    let log = dir.path().join("killed.log");
    let mut job = spawn_logged(job, &log);
    // Kill rank 1 once a checkpoint is written, mid-run.
    wait_for_a_checkpoint(&killed, &mut job);
    let pids = rank_pids(job.0.id());
    let rank1 = pids.get(&1).expect("rank 1 runs under mpirun");
    assert!(Command::new("kill")
        .args(["-KILL", &rank1.to_string()])
        .status()
        .unwrap()
        .success());
    assert_ended_by_the_kill(&mut job, "the job", &log, &killed, iterations);

    resume_on_two_ranks(&killed);
    assert_bit_identical(&weights(&whole), &weights(&killed));
}

/// The timeout (10 s) must exceed any time one rank spends alone before rank
/// 1 is stopped, or another rank would give up first: the run writes no
/// checkpoint (whose write rank 0 syncs to disk) until then.
#[test]
fn a_hanging_rank_ends_the_job_after_the_collective_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = train_args(&run, 16, 100_000, 0);
    let timeout = args
        .iter()
        .position(|a| a == "--collective-timeout")
        .unwrap();
    args[timeout + 1] = "10".into();
    let mut job = mpirun();
    job.args(["-n", "2", env!("CARGO_BIN_EXE_resnet")])
        .args(args);
    let log = dir.path().join("job.log");
    let mut job = spawn_logged(job, &log);
    wait_for_a_record(&run, &mut job.0);
    // Rank 1 hangs (stopped, not dead): only rank 0's timeout can end the job.
    let rank1 = rank_pids(job.0.id())[&1];
    assert!(Command::new("kill")
        .args(["-STOP", &rank1.to_string()])
        .status()
        .unwrap()
        .success());
    let (status, waited) = wait_at_most(&mut job, Duration::from_secs(180), "the job");
    let text = std::fs::read_to_string(&log).unwrap();
    let named: Vec<&str> = text.lines().filter(|l| l.contains("rank")).collect();
    eprintln!("ended {waited:?} after rank 1 hung:\n{}", named.join("\n"));
    assert!(!status.success());
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(120),
        "the job took {waited:?} to end"
    );
    assert!(
        text.contains("error: rank 0 of 2") && text.contains("within 10 s"),
        "{text}"
    );
}

/// `mpirun` answers SIGTERM (and SIGINT) by ending the job: SIGCONT to the
/// ranks, SIGTERM `odls_base_sigkill_timeout` seconds later, SIGKILL as long
/// after that (see docs/distributed.md). With 5 s, the ranks agree on a step
/// to stop after, rank 0 saves its checkpoint, and the job ends. SIGUSR1 is
/// forwarded to the ranks at once, and the job ends when they stop. The run
/// is long enough (400 steps) not to finish in the 5 s before the ranks see
/// SIGTERM; it writes no checkpoint but the stop's.
#[test]
fn a_job_stopped_through_mpirun_saves_a_checkpoint_and_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (batch, iterations) = (16, 400);
    let whole = dir.path().join("whole");
    let mut uninterrupted = mpirun();
    uninterrupted
        .args(["-n", "2", env!("CARGO_BIN_EXE_resnet")])
        .args(train_args(&whole, batch, iterations, 0));
    succeed(uninterrupted);

    for (signal, mca) in [
        (
            "TERM",
            ["--mca", "odls_base_sigkill_timeout", "5"].as_slice(),
        ),
        ("USR1", [].as_slice()),
    ] {
        let run = dir.path().join(signal);
        let mut job = mpirun();
        job.args(mca)
            .args(["-n", "2", env!("CARGO_BIN_EXE_resnet")])
            .args(train_args(&run, batch, iterations, 0));
        let log = dir.path().join(format!("{signal}.log"));
        let mut job = spawn_logged(job, &log);
        wait_for_a_record(&run, &mut job.0);
        send_signal(&job.0, signal);
        let (status, waited) = wait_at_most(&mut job, Duration::from_secs(180), signal);
        let text = std::fs::read_to_string(&log).unwrap();
        let what = format!("SIG{signal}");
        let iteration =
            assert_stopped_with_a_checkpoint(&run, &text, iterations, "mpirun -n 2 ", &what);
        eprintln!("SIG{signal}: the job ended {waited:?} after the signal, stopped after iteration {iteration}");
        assert!(!status.success(), "SIG{signal}: {status}");
        assert!(
            waited < Duration::from_secs(90),
            "SIG{signal}: the job took {waited:?} to end"
        );

        resume_on_two_ranks(&run);
        assert_resumed_alike(&whole, &run, &what);
    }
}
