//! This machine's FP32 peak, measured: every thread runs independent chains
//! of fused multiply-adds on the widest vectors the CPU has (AVX-512, else
//! AVX2 + FMA, else scalar `mul_add`), so no chain waits on another and the
//! loop does nothing but FMAs.

use std::time::Instant;

/// Independent accumulators per thread: more than FMA latency times the FMA
/// units (4 x 2 on recent x86 cores), so the units never stall.
const CHAINS: usize = 16;

/// Accumulators of the AVX2 loop: 12, which with its two operands fit in
/// AVX2's 16 vector registers (16 would spill to memory and wait on loads,
/// halving the measured peak) and still exceed 4 x 2.
#[cfg(target_arch = "x86_64")]
const AVX2_CHAINS: usize = 12;

/// Loop iterations per timed run of a thread.
const ITERATIONS: u64 = 20_000_000;

/// Timed runs; the fastest counts (the peak is what the machine can do).
const RUNS: usize = 5;

/// The FP32 FMA peak of `threads` threads at once, GFLOP/s (2 FLOPs per
/// multiply-add): the best of a few runs of every thread at once.
pub fn measure_peak_gflops(threads: usize) -> f64 {
    let threads = threads.max(1);
    let Kernel { lanes, chains, run } = kernel();
    let flops = threads as f64 * ITERATIONS as f64 * (chains * lanes * 2) as f64;
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| scope.spawn(move || run(ITERATIONS)))
                    .collect();
                for handle in handles {
                    // The sum keeps the loop from being optimised away.
                    std::hint::black_box(handle.join().expect("the FMA loop does not panic"));
                }
            });
            flops / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// An FMA loop: `chains` independent chains of FMAs on `lanes` f32 lanes;
/// `run(n)` steps each chain `n` times and returns the sum of every lane.
struct Kernel {
    lanes: usize,
    chains: usize,
    run: fn(u64) -> f32,
}

/// The FMA loop for this CPU.
fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Kernel {
                lanes: 16,
                chains: CHAINS,
                run: |n| {
                    // SAFETY: AVX-512F is present (checked just above).
                    unsafe { x86::fma_avx512(n) }
                },
            };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Kernel {
                lanes: 8,
                chains: AVX2_CHAINS,
                run: |n| {
                    // SAFETY: AVX2 and FMA are present (checked just above).
                    unsafe { x86::fma_avx2(n) }
                },
            };
        }
    }
    Kernel {
        lanes: 1,
        chains: CHAINS,
        run: fma_scalar,
    }
}

/// `CHAINS` scalar FMA chains of `n` steps each.
fn fma_scalar(n: u64) -> f32 {
    let (a, b) = std::hint::black_box((0.999_999f32, 1e-7f32));
    let mut acc = [1f32; CHAINS];
    for _ in 0..n {
        for v in &mut acc {
            *v = v.mul_add(a, b);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{AVX2_CHAINS, CHAINS};

    /// `CHAINS` AVX-512 FMA chains of `n` steps each.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_avx512(n: u64) -> f32 {
        let (a, b) = std::hint::black_box((0.999_999f32, 1e-7f32));
        let (a, b) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..n {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    /// `AVX2_CHAINS` AVX2 FMA chains of `n` steps each.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_avx2(n: u64) -> f32 {
        let (a, b) = std::hint::black_box((0.999_999f32, 1e-7f32));
        let (a, b) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let mut acc = [_mm256_set1_ps(1.0); AVX2_CHAINS];
        for _ in 0..n {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        acc.iter()
            .map(|&v| {
                // SAFETY: `lanes` holds the 8 values an unaligned store writes.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{fma_scalar, kernel, Kernel, CHAINS};

    #[test]
    fn every_fma_loop_computes_the_same_chains() {
        // Each chain is v <- v * a + b from 1: the vector loops must compute
        // the scalar loop's value in every lane of every chain (FMA rounds
        // once either way).
        let Kernel { lanes, chains, run } = kernel();
        let want = fma_scalar(1000) / CHAINS as f32 * (lanes * chains) as f32;
        let got = run(1000);
        assert!(
            (got - want).abs() <= 1e-4 * want.abs(),
            "{lanes} lanes: {got} against {want} ({chains} chains)"
        );
    }
}
