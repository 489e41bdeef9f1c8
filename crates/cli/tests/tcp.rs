//! `resnet train` as ranks joined over TCP, started as `torchrun` starts
//! them (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), without MPI:
//! two ranks of 64 images train as one process with `--bn-group 64`, rank 1
//! writes nothing; a rank that fails ends the job with its rank named; a
//! rank killed mid-run ends the other with its rank named, and the run
//! resumes on two ranks bit-identical to an uninterrupted one; a signal to
//! one rank stops both after the same step with a checkpoint, from which the
//! run resumes bit-identical.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use resnet_test_support::assert_bit_identical;
use resnet_test_support::process::{send_signal, wait_for_a_record};

mod data_parallel;
use data_parallel::{
    assert_ended_by_the_kill, assert_resumed_alike, assert_stopped_with_a_checkpoint,
    assert_trained_alike, resnet, spawn_logged, train_args, train_one_process, wait_at_most,
    wait_for_a_checkpoint, weights,
};

/// A free local port for rank 0 to listen on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `resnet` with `args` as rank `rank` of 2, whose rank 0 listens on `port`.
fn rank_command(rank: usize, port: u16, args: Vec<String>) -> Command {
    let mut cmd: Command = resnet();
    cmd.args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string());
    cmd
}

/// [`rank_command`] started, its output piped.
fn rank(rank: usize, port: u16, args: Vec<String>) -> Child {
    let mut cmd = rank_command(rank, port, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("cannot start resnet")
}

/// Both ranks of `args` to the end, which must be a success.
fn two_ranks(args: impl Fn() -> Vec<String>) {
    let port = free_port();
    let outs =
        [rank(0, port, args()), rank(1, port, args())].map(|r| r.wait_with_output().unwrap());
    for (r, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "rank {r} failed:\n{}", text(out));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
    // Rank 1 is given a folder of its own, to show that it writes nothing.
    let port = free_port();
    let ranks = [
        rank(0, port, train_args(&parallel, 128, 2, 1)),
        rank(1, port, train_args(&rank1, 128, 2, 1)),
    ];
    let outs = ranks.map(|r| r.wait_with_output().unwrap());
    for (r, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "rank {r} failed:\n{}", text(out));
    }
    let printed: usize = outs
        .iter()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .matches("resnet20: 2 iterations")
                .count()
        })
        .sum();
    assert_eq!(printed, 1, "rank 0 alone reports");
    assert!(!rank1.exists(), "rank 1 wrote {}", rank1.display());
    assert_trained_alike(&single, &parallel);
}

#[test]
fn a_rank_that_fails_ends_the_job_with_its_rank_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broken = train_args(&dir.path().join("rank1"), 128, 2, 1);
    let data = broken.iter().position(|a| a == "--data").unwrap();
    broken[data + 1] = dir.path().join("no-such-data").display().to_string();
    let ranks = [
        rank(0, port, train_args(&dir.path().join("run"), 128, 2, 1)),
        rank(1, port, broken),
    ];
    let [zero, one] = ranks.map(|r| r.wait_with_output().unwrap());
    assert!(!zero.status.success() && !one.status.success());
    let (zero, one) = (text(&zero), text(&one));
    assert!(
        one.contains("rank 1 of 2") && one.contains("no-such-data"),
        "{one}"
    );
    assert!(
        zero.contains("rank 0 of 2") && zero.contains("rank 1"),
        "{zero}"
    );
}

/// `--device cuda` on several ranks is each rank's GPU by its LOCAL_RANK: in
/// a build without CUDA each rank's error names the GPU it was given.
#[test]
fn an_unindexed_gpu_is_each_ranks_local_rank() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ranks = [0, 1].map(|r| {
        let mut args = train_args(&dir.path().join(format!("run{r}")), 128, 2, 1);
        args.extend(["--device".into(), "cuda".into()]);
        let mut cmd = rank_command(r, port, args);
        cmd.env("LOCAL_RANK", r.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("cannot start resnet")
    });
    let outs = ranks.map(|r| r.wait_with_output().unwrap());
    for (r, out) in outs.iter().enumerate() {
        assert!(!out.status.success(), "rank {r} trained without a GPU");
        let text = text(out);
        let (mine, other) = (format!("cuda:{r}"), format!("cuda:{}", 1 - r));
        assert!(
            text.contains(&mine) && !text.contains(&other),
            "rank {r}:\n{text}"
        );
    }
}

#[test]
fn a_killed_rank_ends_the_other_with_its_rank_named_and_the_run_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, killed) = (dir.path().join("whole"), dir.path().join("killed"));
    let (batch, iterations, checkpoint_every) = (16, 120, 4);
    let args = |run: &Path| train_args(run, batch, iterations, checkpoint_every);
    two_ranks(|| args(&whole));

    let port = free_port();
    let mut zero = spawn_logged(
        rank_command(0, port, args(&killed)),
        &dir.path().join("rank0.log"),
    );
    let mut one = spawn_logged(
        rank_command(1, port, args(&killed)),
        &dir.path().join("rank1.log"),
    );
    // Kill rank 1 once a checkpoint is written, mid-run.
    wait_for_a_checkpoint(&killed, &mut zero);
    one.0.kill().unwrap();
    one.0.wait().unwrap();
    let log = dir.path().join("rank0.log");
    let log = assert_ended_by_the_kill(&mut zero, "rank 0", &log, &killed, iterations);
    assert!(log.contains("rank 0 of 2"), "rank 0 is not named:\n{log}");

    two_ranks(|| resume_args(&killed));
    assert_bit_identical(&weights(&whole), &weights(&killed));
}

/// `resnet train --resume --out run`.
fn resume_args(run: &Path) -> Vec<String> {
    ["train", "--resume", "--out"]
        .map(String::from)
        .into_iter()
        .chain([run.display().to_string()])
        .collect()
}

/// A launcher may signal any one rank (torchrun forwards a signal to all of
/// them; a batch system may signal one node): the stop request is summed
/// after every step, so both ranks stop after the same one.
#[test]
fn a_signal_to_one_rank_stops_both_after_one_step_and_the_run_resumes_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (batch, iterations) = (16, 400);
    let whole = dir.path().join("whole");
    two_ranks(|| train_args(&whole, batch, iterations, 0));

    let run = dir.path().join("stopped");
    let port = free_port();
    let logs = [0, 1].map(|r| dir.path().join(format!("rank{r}.log")));
    let mut zero = spawn_logged(
        rank_command(0, port, train_args(&run, batch, iterations, 0)),
        &logs[0],
    );
    let mut one = spawn_logged(
        rank_command(1, port, train_args(&run, batch, iterations, 0)),
        &logs[1],
    );
    wait_for_a_record(&run, &mut zero.0);
    send_signal(&one.0, "TERM");
    let (status, waited) = wait_at_most(&mut zero, Duration::from_secs(120), "rank 0");
    let (status1, _) = wait_at_most(&mut one, Duration::from_secs(60), "rank 1");
    let text = std::fs::read_to_string(&logs[0]).unwrap();
    let iteration = assert_stopped_with_a_checkpoint(
        &run,
        &text,
        iterations,
        "each of the 2 ranks, with the same RANK, WORLD_SIZE and MASTER_*: ",
        "SIGTERM to rank 1",
    );
    eprintln!("rank 0 ended {waited:?} after the signal, stopped after iteration {iteration}");
    assert!(
        !status.success() && !status1.success(),
        "{status}, {status1}"
    );

    two_ranks(|| resume_args(&run));
    assert_resumed_alike(&whole, &run, "SIGTERM to rank 1");
}
