//! `resnet train` as ranks joined over TCP, started as `torchrun` starts
//! them (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), without MPI:
//! two ranks of 64 images train as one process with `--bn-group 64`, rank 1
//! writes nothing; a rank that fails ends the job with its rank named.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};

mod data_parallel;
use data_parallel::{assert_trained_alike, resnet, train_args, train_one_process};

/// A free local port for rank 0 to listen on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `resnet` with `args` as rank `rank` of 2, whose rank 0 listens on `port`.
fn rank(rank: usize, port: u16, args: Vec<String>) -> Child {
    let mut cmd: Command = resnet();
    cmd.args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("cannot start resnet")
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
