//! With the `cuda` feature, compiles each of [`KERNELS`] to PTX with
//! `nvcc` (the `NVCC` variable, else `nvcc` on `PATH`) for the virtual
//! architecture `compute_<CUDA_COMPUTE_CAP>`, 75 when unset: the oldest
//! CUDA 13 supports, which the driver compiles for any newer GPU when it
//! loads the module. Without the feature it does nothing.

use std::path::PathBuf;
use std::process::Command;

/// The CUDA sources, in `kernels/`; each becomes `<name>.ptx` in `OUT_DIR`.
const KERNELS: [&str; 3] = ["elementwise", "loss", "pool"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for name in KERNELS {
        println!("cargo::rerun-if-changed=kernels/{name}.cu");
    }
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in KERNELS {
        let source = format!("kernels/{name}.cu");
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", &format!("-arch=compute_{cap}"), "-o"])
            .arg(out_dir.join(format!("{name}.ptx")))
            .arg(&source)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`{nvcc} --ptx {source}` failed ({s})"),
            Err(e) => panic!(
                "cannot run `{nvcc}` to build the CUDA kernels ({e}): put nvcc on PATH or set NVCC"
            ),
        }
    }
}
