//! What the workspace's tests share, so that each exists once: where the
//! bundled CIFAR-10 sample is, how two tensors (or two sets of weights)
//! compare, the kernels' random inputs and convolution shapes, how a test runs one of the binaries, and a local HTTP server
//! ([`http`]) for the download and hub tests, and how a test stops a
//! training process as a user would ([`process`]). A dev-dependency only.

pub mod http;
pub mod process;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bundled CIFAR-10 sample (`data/cifar-10-sample`: 5438 training and
/// 1017 test images in the official binary layout).
pub fn cifar_sample() -> PathBuf {
    workspace_root().join("data/cifar-10-sample")
}

/// The largest absolute difference between two tensors of one shape, as f32.
///
/// # Panics
/// When the shapes differ or the tensors cannot be read back.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).expect("two tensors of one shape"))
}

/// The largest magnitude of a tensor's values, as f32: the scale a
/// relative tolerance is taken of.
///
/// # Panics
/// When the tensor is empty or cannot be read back.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_dtype(candle_core::DType::F32))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("a non-empty tensor")
}

/// A CPU tensor of `shape` holding uniform values in [-1, 1) drawn from
/// `seed` (ChaCha8): the kernels' tests' inputs, the same on every machine.
///
/// # Panics
/// Never for a valid shape.
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("a shape that fits the data")
}

/// Convolution geometries `[n, c, h, w, o, k, stride, pad]` every
/// convolution kernel is checked on: 3x3 with and without stride and
/// padding, 1x1 (pointwise, strided, padded), the 7x7/2 stem, odd sizes,
/// batch 1, kernels that overhang a tiny input, enough output channels for
/// the row-major weight-gradient path, enough channels and tiles for
/// Winograd's F(2x2, 3x3) (an odd width too), 3x3 shapes for the direct
/// kernel (output channels a multiple of 8, positions a multiple of 16, with
/// tails of 1 and 2 vectors of 16 positions), and the shapes of ResNet's
/// stages (a 64-wide 3x3, a strided widening 3x3, a 1x1 to 256 channels).
pub const CONV_CASES: [[usize; 8]; 20] = [
    [2, 3, 8, 8, 4, 3, 1, 1],
    [3, 5, 9, 7, 6, 3, 2, 1],
    [1, 16, 32, 32, 16, 3, 1, 1],
    [4, 6, 11, 13, 5, 3, 2, 1],
    [2, 4, 5, 5, 3, 3, 2, 0],
    [2, 8, 15, 15, 4, 1, 1, 0],
    [2, 8, 15, 15, 16, 1, 2, 0],
    [1, 3, 4, 6, 2, 1, 1, 1],
    [1, 3, 23, 21, 8, 7, 2, 3],
    [2, 3, 64, 64, 16, 7, 2, 3],
    [2, 2, 3, 2, 3, 7, 1, 3],
    [1, 2, 1, 1, 3, 3, 1, 1],
    [5, 7, 6, 6, 9, 3, 1, 0],
    [3, 5, 6, 7, 40, 3, 1, 1],
    [4, 64, 16, 15, 64, 3, 1, 1],
    [8, 64, 8, 8, 64, 3, 1, 1],
    [4, 32, 16, 16, 64, 3, 2, 1],
    [4, 64, 14, 14, 256, 1, 1, 0],
    [2, 7, 12, 4, 16, 3, 1, 1],
    [3, 8, 5, 16, 24, 3, 1, 1],
];

/// Asserts that two sets of named tensors hold the same names and, for each,
/// the same bits.
///
/// # Panics
/// On the first name or value that differs, naming it.
pub fn assert_bit_identical(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut names: Vec<_> = a.keys().collect();
    names.sort();
    let mut other: Vec<_> = b.keys().collect();
    other.sort();
    assert_eq!(names, other, "the two sets name different tensors");
    for name in names {
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .expect("a readable tensor")
                .into_iter()
                .map(f32::to_bits)
                .collect()
        };
        assert!(bits(&a[name]) == bits(&b[name]), "{name} differs");
    }
}

/// Runs `program` (a test's `env!("CARGO_BIN_EXE_...")`) with `args` (text
/// or paths) and returns what it did.
///
/// # Panics
/// When the program cannot be started.
pub fn run<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// The names of the entries of `dir`, sorted.
///
/// # Panics
/// When `dir` cannot be read.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The process's stderr, for assertion messages.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
