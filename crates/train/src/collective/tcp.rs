//! A world of ranks joined over TCP, as `torchrun` starts them: every rank
//! gets `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`; rank 0 listens
//! on the master address, the others connect to it. No MPI is needed.
//!
//! Sums go through rank 0 (a star): every other rank sends its values, rank
//! 0 adds them in rank order and sends the sum back, so every rank gets the
//! same bits. Each message is a kind byte (`f32` or `f64`), a length and the
//! values, little-endian. Rank 0 carries the whole world's traffic, which
//! suits a few CPU nodes, not many GPUs (NCCL's ring is for those).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Collective, CollectiveError};

/// What a rank sends first: this tag, its rank and the world size it was
/// given, each as a little-endian `u32` after the tag.
const HELLO: &[u8; 4] = b"RNT1";

/// How long a rank waits between attempts to reach rank 0, which may start
/// later than it.
const RETRY: Duration = Duration::from_millis(50);

/// One rank of a world joined over TCP.
#[derive(Debug)]
pub struct TcpWorld {
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Rank 0: the connections to ranks `1..size`, in rank order. Any other
    /// rank: its connection to rank 0.
    peers: Vec<TcpStream>,
}

/// The element types a sum carries.
trait Value: Copy + std::ops::AddAssign {
    /// Its kind byte on the wire.
    const KIND: u8;
    /// Its size in bytes.
    const SIZE: usize;
    fn write(self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Self;
}

impl Value for f32 {
    const KIND: u8 = 4;
    const SIZE: usize = 4;
    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        f32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
}

impl Value for f64 {
    const KIND: u8 = 8;
    const SIZE: usize = 8;
    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        f64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
}

impl TcpWorld {
    /// The world this process was started in, from `torchrun`'s variables:
    /// None where `WORLD_SIZE` is unset or 1 (a world of one process needs
    /// no connections); an error naming the variable where one is missing
    /// or not a number, or the address where rank 0 cannot listen or be
    /// reached within `timeout`.
    pub fn from_env(timeout: Duration) -> Result<Option<TcpWorld>, CollectiveError> {
        match std::env::var("WORLD_SIZE") {
            Err(_) => return Ok(None),
            Ok(size) if size.trim() == "1" => return Ok(None),
            Ok(_) => {}
        }
        fn var<T: std::str::FromStr>(name: &str) -> Result<T, CollectiveError> {
            let value = std::env::var(name).map_err(|_| {
                setup_error(format!("WORLD_SIZE is set, so {name} must be set too"))
            })?;
            value
                .trim()
                .parse()
                .map_err(|_| setup_error(format!("{name} must be a whole number, got {value:?}")))
        }
        let size: usize = var("WORLD_SIZE")?;
        let rank: usize = var("RANK")?;
        let port: u16 = var("MASTER_PORT")?;
        let host = std::env::var("MASTER_ADDR")
            .map_err(|_| setup_error("WORLD_SIZE is set, so MASTER_ADDR must be set too".into()))?;
        let address = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| {
                setup_error(format!(
                    "MASTER_ADDR {host:?} is not a host name or address"
                ))
            })?;
        Self::join(rank, size, address, timeout).map(Some)
    }

    /// Rank `rank` of a world of `size`, whose rank 0 listens on `master`.
    pub fn join(
        rank: usize,
        size: usize,
        master: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpWorld, CollectiveError> {
        if size == 0 || rank >= size {
            return Err(setup_error(format!(
                "RANK must be below WORLD_SIZE, got rank {rank} of {size}"
            )));
        }
        if rank == 0 {
            let listener = TcpListener::bind(master)
                .map_err(|e| setup_error(format!("rank 0 cannot listen on {master}: {e}")))?;
            return Self::serve(&listener, size, timeout);
        }
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match TcpStream::connect_timeout(&master, timeout) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => {
                    return Err(setup_error(format!(
                        "rank {rank} could not reach rank 0 at {master} within {} s: {e}",
                        timeout.as_secs_f64()
                    )))
                }
                Err(_) => std::thread::sleep(RETRY),
            }
        };
        let world = TcpWorld {
            rank,
            size,
            timeout,
            peers: vec![stream],
        };
        world.configure()?;
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&(rank as u32).to_le_bytes());
        hello.extend_from_slice(&(size as u32).to_le_bytes());
        world.send(0, &hello, "rendezvous")?;
        // Rank 0 answers once every rank has joined.
        world.receive(0, &mut [0u8; 1], "rendezvous")?;
        Ok(world)
    }

    /// Rank 0 of a world of `size` on `listener`: waits up to `timeout` for
    /// every other rank to connect and say which it is, then lets them go.
    pub fn serve(
        listener: &TcpListener,
        size: usize,
        timeout: Duration,
    ) -> Result<TcpWorld, CollectiveError> {
        let deadline = Instant::now() + timeout;
        listener.set_nonblocking(true).map_err(io_setup)?;
        let mut joined: Vec<Option<TcpStream>> = (1..size).map(|_| None).collect();
        while joined.iter().any(Option::is_none) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<usize> =
                            (1..size).filter(|r| joined[r - 1].is_none()).collect();
                        return Err(setup_error(format!(
                            "rank 0 of {size}: ranks {missing:?} did not join within {} s",
                            timeout.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(RETRY);
                    continue;
                }
                Err(e) => return Err(io_setup(e)),
            };
            stream.set_nonblocking(false).map_err(io_setup)?;
            stream.set_read_timeout(Some(timeout)).map_err(io_setup)?;
            let mut hello = [0u8; 12];
            (&stream).read_exact(&mut hello).map_err(io_setup)?;
            let field = |i: usize| {
                u32::from_le_bytes(hello[i..i + 4].try_into().expect("4 bytes")) as usize
            };
            let (rank, their_size) = (field(4), field(8));
            if &hello[..4] != HELLO || their_size != size || rank == 0 || rank >= size {
                return Err(setup_error(format!(
                    "rank 0 of {size} got a connection from rank {rank} of {their_size}: \
                     every rank must be given the same WORLD_SIZE and its own RANK"
                )));
            }
            if joined[rank - 1].replace(stream).is_some() {
                return Err(setup_error(format!("rank {rank} joined twice")));
            }
        }
        let world = TcpWorld {
            rank: 0,
            size,
            timeout,
            peers: joined.into_iter().flatten().collect(),
        };
        world.configure()?;
        for peer in 1..size {
            world.send(peer, &[1], "rendezvous")?;
        }
        Ok(world)
    }

    /// Timeouts on every connection, and no delay on small messages.
    fn configure(&self) -> Result<(), CollectiveError> {
        for stream in &self.peers {
            stream
                .set_read_timeout(Some(self.timeout))
                .map_err(io_setup)?;
            stream
                .set_write_timeout(Some(self.timeout))
                .map_err(io_setup)?;
            stream.set_nodelay(true).map_err(io_setup)?;
        }
        Ok(())
    }

    /// The connection to `peer` (rank 0's to another rank, or another
    /// rank's to rank 0).
    fn stream(&self, peer: usize) -> &TcpStream {
        &self.peers[if self.rank == 0 { peer - 1 } else { 0 }]
    }

    fn send(
        &self,
        peer: usize,
        bytes: &[u8],
        operation: &'static str,
    ) -> Result<(), CollectiveError> {
        self.stream(peer)
            .write_all(bytes)
            .map_err(|e| self.failure(peer, &e, operation))
    }

    fn receive(
        &self,
        peer: usize,
        bytes: &mut [u8],
        operation: &'static str,
    ) -> Result<(), CollectiveError> {
        self.stream(peer)
            .read_exact(bytes)
            .map_err(|e| self.failure(peer, &e, operation))
    }

    /// What a failed read or write from `peer` means: it took longer than
    /// the timeout, or the peer is gone.
    fn failure(&self, peer: usize, e: &std::io::Error, operation: &'static str) -> CollectiveError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => CollectiveError::Timeout {
                rank: self.rank,
                operation,
                timeout: self.timeout,
            },
            _ => CollectiveError::RankGone {
                rank: peer,
                waiting: self.rank,
                operation,
            },
        }
    }

    /// `values` summed over the ranks through rank 0, in rank order.
    fn sum<T: Value>(
        &self,
        values: &mut [T],
        operation: &'static str,
    ) -> Result<(), CollectiveError> {
        let mut header = vec![T::KIND];
        header.extend_from_slice(&(values.len() as u64).to_le_bytes());
        let mut bytes = vec![0u8; values.len() * T::SIZE];
        if self.rank != 0 {
            let mut message = header;
            for &v in values.iter() {
                v.write(&mut message);
            }
            self.send(0, &message, operation)?;
            self.receive(0, &mut bytes, operation)?;
            for (v, b) in values.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                *v = T::read(b);
            }
            return Ok(());
        }
        for peer in 1..self.size {
            let mut theirs = [0u8; 9];
            self.receive(peer, &mut theirs, operation)?;
            if theirs[..] != header[..] {
                return Err(setup_error(format!(
                    "rank {peer} sent a {operation} of another type or length than rank 0's \
                     ({} values of {} bytes)",
                    values.len(),
                    T::SIZE
                )));
            }
            self.receive(peer, &mut bytes, operation)?;
            for (v, b) in values.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                *v += T::read(b);
            }
        }
        let mut sum = Vec::with_capacity(bytes.len());
        for &v in values.iter() {
            v.write(&mut sum);
        }
        for peer in 1..self.size {
            self.send(peer, &sum, operation)?;
        }
        Ok(())
    }
}

impl Collective for TcpWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.sum(values, "all-reduce")
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        self.sum(values, "all-reduce")
    }
}

/// An error setting the world up (or a message no rank should send), with
/// what went wrong.
fn setup_error(detail: String) -> CollectiveError {
    CollectiveError::Setup(detail)
}

fn io_setup(e: std::io::Error) -> CollectiveError {
    setup_error(format!("joining the ranks over TCP: {e}"))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use super::TcpWorld;
    use crate::collective::{Collective, CollectiveError};

    const TIMEOUT: Duration = Duration::from_secs(20);

    /// Rank 0 on a free local port and `others` threads joining it, each
    /// running `body` with its rank's world; their results in rank order.
    fn run<T: Send + 'static>(
        size: usize,
        timeout: Duration,
        body: impl Fn(TcpWorld) -> T + Send + Sync + Copy + 'static,
    ) -> Vec<T> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let others: Vec<_> = (1..size)
            .map(|rank| {
                thread::spawn(move || body(TcpWorld::join(rank, size, address, timeout).unwrap()))
            })
            .collect();
        let mut results = vec![body(TcpWorld::serve(&listener, size, timeout).unwrap())];
        results.extend(others.into_iter().map(|t| t.join().unwrap()));
        results
    }

    #[test]
    fn every_rank_gets_the_sum_in_rank_order_bit_for_bit() {
        let results = run(3, TIMEOUT, |world| {
            let r = world.rank() as f32;
            let mut sums = Vec::new();
            for step in 0..3 {
                let mut f32s: Vec<f32> = (0..1000)
                    .map(|i| (i as f32 * 0.37 + r).sin() / (step + 1) as f32)
                    .collect();
                world.all_reduce_sum_f32(&mut f32s).unwrap();
                let mut f64s = vec![f64::from(r) + 0.1, 1e-17 * f64::from(r)];
                world.all_reduce_sum_f64(&mut f64s).unwrap();
                sums.push((f32s, f64s));
            }
            (world.rank(), world.world_size(), sums)
        });
        for (rank, (r, size, _)) in results.iter().enumerate() {
            assert_eq!((*r, *size), (rank, 3));
        }
        let first = &results[0].2;
        for (_, _, sums) in &results[1..] {
            assert_eq!(sums, first, "every rank holds the same bits");
        }
        for (step, (f32s, f64s)) in first.iter().enumerate() {
            for (i, got) in f32s.iter().enumerate() {
                let value = |r: f32| (i as f32 * 0.37 + r).sin() / (step + 1) as f32;
                let want = value(0.0) + value(1.0) + value(2.0);
                assert_eq!(*got, want, "step {step}, value {i}");
            }
            assert_eq!(f64s, &vec![0.1 + 1.1 + 2.1, 1e-17 + 2e-17]);
        }
    }

    #[test]
    fn a_rank_that_leaves_is_named_by_rank_zero() {
        let results = run(3, TIMEOUT, |world| {
            if world.rank() == 2 {
                drop(world);
                return None;
            }
            let mut values = [1f32; 4];
            Some(world.all_reduce_sum_f32(&mut values).unwrap_err())
        });
        match &results[0] {
            Some(CollectiveError::RankGone {
                rank: 2,
                waiting: 0,
                ..
            }) => {}
            other => panic!("rank 0 got {other:?}"),
        }
        // Rank 0 ended its sum with the error, so rank 1 sees it leave.
        match &results[1] {
            Some(CollectiveError::RankGone {
                rank: 0,
                waiting: 1,
                ..
            }) => {}
            other => panic!("rank 1 got {other:?}"),
        }
    }

    #[test]
    fn a_rank_that_never_joins_a_sum_times_the_others_out() {
        let results = run(2, Duration::from_millis(300), |world| {
            if world.rank() == 1 {
                thread::sleep(Duration::from_millis(1500));
                return None;
            }
            let mut values = [1f64; 2];
            Some(world.all_reduce_sum_f64(&mut values).unwrap_err())
        });
        let err = results[0].as_ref().unwrap();
        assert!(
            matches!(err, CollectiveError::Timeout { rank: 0, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("0.3 s"), "{err}");
    }

    #[test]
    fn ranks_given_another_world_size_or_missing_are_errors_naming_them() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let other = thread::spawn(move || TcpWorld::join(1, 3, address, TIMEOUT).map(|_| ()));
        let err = TcpWorld::serve(&listener, 2, TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rank 1 of 3") && err.contains("WORLD_SIZE"),
            "{err}"
        );
        assert!(other.join().unwrap().is_err());

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = TcpWorld::serve(&listener, 3, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ranks [1, 2] did not join within 0.2 s"),
            "{err}"
        );

        let err = TcpWorld::join(3, 2, address, TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rank 3 of 2"), "{err}");
    }
}
