//! In-place updates of many f32 tensors in one pass, as an optimizer's step
//! over every parameter of a network: on CUDA one kernel launch for all of
//! them (PyTorch's `foreach`/multi-tensor apply), where candle's in-place
//! ops write one tensor a launch.
//!
//! The update's values are cut into [`Chunk`]s, runs of at most
//! [`CHUNK_VALUES`] values of one tensor. The CPU runs the chunks as
//! parallel tasks; a CUDA kernel runs one block a chunk, reading the
//! addresses of its run in each operand from a table ([`address_table`]).
//! The chunks, the table, the check that no written tensor shares memory
//! with another operand ([`distinct_storage`]) and the locking are the same
//! code on both ([`update`]), so the CPU tests cover everything of the CUDA
//! path but the launch.

use std::collections::HashMap;
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::dispatch::{has_own_kernel, CudaKernel};
use crate::error::expect_like;
use crate::OpsError;

/// The most values of one chunk: a CUDA block's work, a CPU task's.
const CHUNK_VALUES: usize = 1 << 14;

/// Bytes per value: the operands are f32.
pub(crate) const VALUE_BYTES: u64 = 4;

/// A run of values of one tensor of the update: values `start..start + len`
/// of operand tensor `tensor`, in each operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Which tensor of the update, in the order given.
    pub(crate) tensor: usize,
    /// The first value, counted from the tensor's first.
    pub(crate) start: usize,
    /// How many values, at most [`CHUNK_VALUES`].
    pub(crate) len: usize,
}

/// The chunks covering tensors of `lens` values each, in order, at most
/// `max` values each; none for an empty tensor.
fn chunks(lens: &[usize], max: usize) -> Vec<Chunk> {
    lens.iter()
        .enumerate()
        .flat_map(|(tensor, &len)| {
            (0..len).step_by(max).map(move |start| Chunk {
                tensor,
                start,
                len: max.min(len - start),
            })
        })
        .collect()
}

/// The table a multi-tensor kernel reads, one row per chunk: the address
/// of the chunk's first value in each operand (`firsts[tensor][k]`, the
/// address of the tensor's first value in operand `k`, plus the chunk's
/// start), its length, then its tensor's `words`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn address_table(chunks: &[Chunk], firsts: &[Vec<u64>], words: &[&[u64]]) -> Vec<u64> {
    chunks
        .iter()
        .flat_map(|c| {
            let offset = c.start as u64 * VALUE_BYTES;
            firsts[c.tensor]
                .iter()
                .map(move |first| first + offset)
                .chain([c.len as u64])
                .chain(words[c.tensor].iter().copied())
        })
        .collect()
}

/// One tensor of an update ([`update`]): its `W` operands written and `R`
/// read, each with its name in errors, all of the same number of values,
/// and the words that its rows of a CUDA kernel's table end with.
pub(crate) struct Tensors<'a, const W: usize, const R: usize> {
    /// The operands written, in place.
    pub(crate) written: [(&'static str, &'a Tensor); W],
    /// The operands read.
    pub(crate) read: [(&'static str, &'a Tensor); R],
    /// The tensor's own values for the kernel (a scale's f32 bits, ...).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) words: &'a [u64],
}

/// Checks that every operand of each tensor has the shape and dtype of its
/// first written one (an error names the tensor: `parameter 3: the
/// gradient is ...`, for `what` `parameter`), and says whether all can take
/// one pass of [`update`]: f32 with this crate's kernels, on the device of
/// the first tensor's. None can when there are none.
pub(crate) fn fits_one_pass<const W: usize, const R: usize>(
    op: &'static str,
    what: &str,
    tensors: &[Tensors<W, R>],
) -> Result<bool, OpsError> {
    for (i, t) in tensors.iter().enumerate() {
        for &other in t.written[1..].iter().chain(&t.read) {
            expect_like(op, other, t.written[0]).map_err(|e| match e {
                OpsError::Incompatible { op, detail } => OpsError::Incompatible {
                    op,
                    detail: format!("{what} {i}: {detail}"),
                },
                other => other,
            })?;
        }
    }
    let Some(first) = tensors.first() else {
        return Ok(false);
    };
    let device = first.written[0].1.device();
    Ok(tensors.iter().all(|t| {
        t.written.iter().chain(&t.read).all(|(_, x)| {
            has_own_kernel(CudaKernel::Update, x.device(), x.dtype())
                && x.device().same_device(device)
        })
    }))
}

/// A multi-tensor CUDA kernel of `kernels/elementwise.cu`: its name and the
/// f32 scalars it takes after the table.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct Kernel<'a> {
    /// The kernel's name.
    pub(crate) name: &'static str,
    /// Its scalar arguments, in order.
    pub(crate) scalars: &'a [f32],
}

/// Updates the written operands of every tensor in `tensors` in one pass:
/// on the CPU `cpu` on each chunk (its runs of the written operands, then
/// of the read ones), on CUDA `kernel`, one launch. Every operand must be
/// f32 on the device of the first, the CPU or CUDA (the callers check it);
/// `what` names a tensor in errors (`parameter` gives `parameter 3's
/// weight`).
pub(crate) fn update<const W: usize, const R: usize>(
    op: &'static str,
    what: &str,
    tensors: &[Tensors<W, R>],
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))] kernel: Kernel,
    cpu: impl Fn(&Chunk, [&mut [f32]; W], [&[f32]; R]) + Sync,
) -> Result<(), OpsError> {
    let read = tensors
        .iter()
        .map(|t| t.read.iter().map(|(_, x)| x.contiguous()).collect())
        .collect::<candle_core::Result<Vec<Vec<Tensor>>>>()?;
    let mut operands = Vec::with_capacity((W + R) * tensors.len());
    for (i, (t, read)) in tensors.iter().zip(&read).enumerate() {
        let operand = |name: &str, written, tensor| Operand {
            what: format!("{what} {i}'s {name}"),
            written,
            tensor,
        };
        operands.extend(t.written.iter().map(|&(name, x)| operand(name, true, x)));
        operands.extend(
            t.read
                .iter()
                .zip(read)
                .map(|((name, _), x)| operand(name, false, x)),
        );
    }
    let ids = distinct_storage(op, &operands)?;
    let read_ids: Vec<u64> = ids
        .chunks(W + R)
        .flat_map(|b| b[W..].iter().copied())
        .collect();
    let lens: Vec<usize> = tensors
        .iter()
        .map(|t| t.written[0].1.elem_count())
        .collect();
    let chunks = chunks(&lens, CHUNK_VALUES);
    let mut write_locks: Vec<Vec<_>> = (0..W)
        .map(|k| {
            tensors
                .iter()
                .map(|t| t.written[k].1.storage_mut_and_layout())
                .collect()
        })
        .collect();
    let read_flat: Vec<&Tensor> = read.iter().flatten().collect();
    let (read_locks, lock_of) = read_locks(&read_flat, &read_ids);
    let written: Vec<_> = write_locks.iter_mut().map(|l| unlocked(l)).collect();
    let read: Vec<Vec<_>> = (0..R)
        .map(|k| {
            (0..tensors.len())
                .map(|t| {
                    let j = t * R + k;
                    (&*read_locks[lock_of[j]], read_flat[j].layout())
                })
                .collect()
        })
        .collect();
    match written.first().and_then(|list| list.first()) {
        None => Ok(()),
        Some((Storage::Cpu(_), _)) => cpu_pass(op, &chunks, &lens, written, &read, cpu),
        #[cfg(feature = "cuda")]
        Some((Storage::Cuda(_), _)) => {
            let words: Vec<&[u64]> = tensors.iter().map(|t| t.words).collect();
            let operands = crate::cuda::MultiTensor { written, read };
            crate::cuda::multi_tensor(op, &kernel, &chunks, &lens, operands, &words)?;
            Ok(())
        }
        Some(_) => {
            Err(candle_core::Error::Msg(format!("{op}: takes tensors on the CPU or CUDA")).into())
        }
    }
}

/// The chunks as parallel tasks on the CPU.
fn cpu_pass<const W: usize, const R: usize>(
    op: &'static str,
    chunks: &[Chunk],
    lens: &[usize],
    written: Vec<Vec<(&mut Storage, &Layout)>>,
    read: &[Vec<(&Storage, &Layout)>],
    f: impl Fn(&Chunk, [&mut [f32]; W], [&[f32]; R]) + Sync,
) -> Result<(), OpsError> {
    let mut runs = written
        .into_iter()
        .map(|list| Ok(split_into_chunks(chunks, cpu_values_mut(op, list, lens)?).into_iter()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let read = read
        .iter()
        .map(|list| {
            list.iter()
                .zip(lens)
                .map(|(&(s, l), &len)| cpu_values(op, s, l, len))
                .collect::<candle_core::Result<Vec<_>>>()
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let tasks: Vec<(&Chunk, [&mut [f32]; W])> = chunks
        .iter()
        .map(|c| {
            let runs = std::array::from_fn(|k| runs[k].next().expect("one run per chunk"));
            (c, runs)
        })
        .collect();
    tasks.into_par_iter().for_each(|(c, written)| {
        let read = std::array::from_fn(|k| &read[k][c.tensor][c.start..c.start + c.len]);
        f(c, written, read)
    });
    Ok(())
}

/// The contiguous f32 values of a CPU storage, `len` of them.
fn cpu_values<'a>(
    op: &'static str,
    storage: &'a Storage,
    layout: &Layout,
    len: usize,
) -> candle_core::Result<&'a [f32]> {
    match storage {
        Storage::Cpu(CpuStorage::F32(data)) => Ok(&data[value_range(op, layout, len)?]),
        _ => candle_core::bail!("{op}: expected f32 values on the CPU"),
    }
}

/// The contiguous f32 values of CPU storages, `lens[i]` of the `i`th, to
/// write.
fn cpu_values_mut<'a>(
    op: &'static str,
    storages: Vec<(&'a mut Storage, &Layout)>,
    lens: &[usize],
) -> candle_core::Result<Vec<&'a mut [f32]>> {
    storages
        .into_iter()
        .zip(lens)
        .map(|(storage, &len)| match storage {
            (Storage::Cpu(CpuStorage::F32(data)), layout) => {
                Ok(&mut data[value_range(op, layout, len)?])
            }
            _ => candle_core::bail!("{op}: expected f32 values on the CPU"),
        })
        .collect()
}

/// The storages behind write locks, with their layouts.
fn unlocked<'a>(
    locks: &'a mut [(RwLockWriteGuard<'_, Storage>, &'a Layout)],
) -> Vec<(&'a mut Storage, &'a Layout)> {
    locks.iter_mut().map(|(s, l)| (&mut **s, *l)).collect()
}

/// One operand tensor of an update: its name in errors and whether the
/// update writes it.
struct Operand<'a> {
    /// What it is, for errors: `parameter 3's momentum buffer`.
    what: String,
    /// Whether the update writes it.
    written: bool,
    /// The tensor.
    tensor: &'a Tensor,
}

/// What identifies each operand's storage ([`storage_id`]), checked so
/// that no written operand shares its storage with any other operand
/// (operands only read may share theirs): the update locks every written
/// storage for writing, and would otherwise wait on itself forever or read
/// values it has already changed.
fn distinct_storage(op: &'static str, operands: &[Operand]) -> Result<Vec<u64>, OpsError> {
    let ids: Vec<u64> = operands.iter().map(|o| storage_id(o.tensor)).collect();
    let mut order: Vec<usize> = (0..operands.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    for pair in order.windows(2) {
        let (a, b) = (&operands[pair[0]], &operands[pair[1]]);
        if ids[pair[0]] == ids[pair[1]] && (a.written || b.written) {
            return Err(OpsError::Incompatible {
                op,
                detail: format!("{} and {} share their storage", a.what, b.what),
            });
        }
    }
    Ok(ids)
}

/// Read locks on the storages of `tensors`, identified by `ids`
/// ([`distinct_storage`]'s), each storage locked once (a thread that takes
/// a read lock it already holds may panic): the guards, and the index of
/// each tensor's guard.
fn read_locks<'a>(
    tensors: &[&'a Tensor],
    ids: &[u64],
) -> (Vec<RwLockReadGuard<'a, Storage>>, Vec<usize>) {
    let mut guards = Vec::new();
    let mut first_of: HashMap<u64, usize> = HashMap::new();
    let which = tensors
        .iter()
        .zip(ids)
        .map(|(t, id)| {
            *first_of.entry(*id).or_insert_with(|| {
                guards.push(t.storage_and_layout().0);
                guards.len() - 1
            })
        })
        .collect();
    (guards, which)
}

/// What identifies a tensor's storage: the address of the storage object
/// the tensor shares with every view of it (candle's `same_storage`).
fn storage_id(tensor: &Tensor) -> u64 {
    let (storage, _) = tensor.storage_and_layout();
    &*storage as *const Storage as u64
}

/// The offsets of a tensor's values in its storage, checked to be
/// contiguous and `len` long.
pub(crate) fn value_range(
    op: &'static str,
    layout: &Layout,
    len: usize,
) -> candle_core::Result<std::ops::Range<usize>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(candle_core::Error::RequiresContiguous { op });
    };
    if end - start != len {
        candle_core::bail!("{op}: expected {len} values, got {}", end - start);
    }
    Ok(start..end)
}

/// Cuts each tensor's slice in `slices` into `chunks`' runs, in order: one
/// item per chunk, the runs of a tensor's chunks tiling its slice. `chunks`
/// must come from [`chunks`] over the slices' lengths.
fn split_into_chunks<'a, T>(chunks: &[Chunk], slices: Vec<&'a mut [T]>) -> Vec<&'a mut [T]> {
    let mut rest: Vec<Option<&'a mut [T]>> = slices.into_iter().map(Some).collect();
    chunks
        .iter()
        .map(|c| {
            let slice = rest[c.tensor].take().expect("every tensor has its slice");
            let (run, tail) = slice.split_at_mut(c.len);
            rest[c.tensor] = Some(tail);
            run
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn chunks_tile_every_tensor_in_order() {
        let lens = [5, 0, 8, 9, 1];
        let chunks = chunks(&lens, 4);
        let runs: Vec<(usize, usize, usize)> =
            chunks.iter().map(|c| (c.tensor, c.start, c.len)).collect();
        let want = [
            (0, 0, 4),
            (0, 4, 1),
            (2, 0, 4),
            (2, 4, 4),
            (3, 0, 4),
            (3, 4, 4),
            (3, 8, 1),
            (4, 0, 1),
        ];
        assert_eq!(runs, want);
    }

    #[test]
    fn the_address_table_gives_each_chunk_its_first_value_and_length() {
        let chunks = chunks(&[5, 3], 4);
        let firsts = [vec![1000u64, 2000], vec![3000, 4000]];
        let table = address_table(&chunks, &firsts, &[&[7], &[8]]);
        let want = [1000, 2000, 4, 7, 1016, 2016, 1, 7, 3000, 4000, 3, 8];
        assert_eq!(table, want);
    }

    #[test]
    fn split_runs_are_the_chunks_values() {
        let mut a: Vec<u32> = (0..5).collect();
        let mut b: Vec<u32> = (10..13).collect();
        let chunks = chunks(&[5, 3], 2);
        let runs = split_into_chunks(&chunks, vec![&mut a[..], &mut b[..]]);
        let runs: Vec<Vec<u32>> = runs.into_iter().map(|r| r.to_vec()).collect();
        let want: [&[u32]; 5] = [&[0, 1], &[2, 3], &[4], &[10, 11], &[12]];
        assert_eq!(runs, want);
    }

    #[test]
    fn a_written_tensor_must_not_share_storage() {
        let dev = Device::Cpu;
        let a = Var::zeros(6, candle_core::DType::F32, &dev).unwrap();
        let b = Var::zeros(6, candle_core::DType::F32, &dev).unwrap();
        let view = a.as_tensor().narrow(0, 2, 3).unwrap();
        let operand = |what: &str, written, tensor| Operand {
            what: what.into(),
            written,
            tensor,
        };
        // Two reads of one storage are fine.
        let ok = [
            operand("a", true, b.as_tensor()),
            operand("x", false, a.as_tensor()),
            operand("y", false, &view),
        ];
        distinct_storage("test", &ok).unwrap();
        let clash = [
            operand("the weight", true, a.as_tensor()),
            operand("b", false, b.as_tensor()),
            operand("the gradient", false, &view),
        ];
        let err = distinct_storage("test", &clash).unwrap_err().to_string();
        assert!(
            err.contains("the weight and the gradient share their storage"),
            "{err}"
        );
    }
}
