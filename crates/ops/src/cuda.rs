//! This crate's own CUDA kernels (`kernels/*.cu`, compiled to PTX by
//! `build.rs`) and their launch on the device's stream, over contiguous f32
//! arguments: one thread per value written, or for the multi-tensor kernels
//! one block per chunk of a tensor's values.

use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{CudaStorage, Layout, Result, Storage};

use crate::args::cuda_view;
use crate::multi_tensor::{address_table, value_range, Chunk, Kernel, VALUE_BYTES};

/// A PTX module of this crate's kernels, loaded into each device once
/// (`CudaDevice::get_or_load_custom_func(kernel, module.name, module.ptx)`).
pub(crate) struct Module {
    /// The name the device keeps the loaded module under.
    pub(crate) name: &'static str,
    /// The module's PTX.
    pub(crate) ptx: &'static str,
}

/// `kernels/elementwise.cu`: ReLU, residual join, eval-mode batch norm, SGD
/// and running statistics.
pub(crate) const ELEMENTWISE: Module = Module {
    name: "resnet_ops_elementwise",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/elementwise.ptx")),
};

/// `kernels/pool.cu`: the max pool, the option-A shortcut and the global
/// average pool, forward and backward.
pub(crate) const POOL: Module = Module {
    name: "resnet_ops_pool",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/pool.ptx")),
};

/// `kernels/loss.cu`: the cross-entropy loss and its gradient.
pub(crate) const LOSS: Module = Module {
    name: "resnet_ops_loss",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/loss.ptx")),
};

/// A custom-op argument: its storage and layout.
pub(crate) type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// One thread per value, and `n` as the kernels take it (`n` > 0: a launch
/// of no blocks is an error).
fn launch_config(op: &'static str, n: usize) -> Result<(LaunchConfig, u32)> {
    let n = u32::try_from(n)
        .map_err(|_| candle_core::Error::Msg(format!("{op}: {n} values are too many")))?;
    Ok((LaunchConfig::for_num_elems(n), n))
}

/// Runs the kernel `name` of `module` with one thread for each of the
/// `count` values it writes into a new buffer, which it returns. The kernel
/// takes `inputs`, the output, `params`, then `count`, in that order: the
/// signature of every kernel of this crate that makes a new tensor. Nothing
/// is launched for no values.
pub(crate) fn launch(
    op: &'static str,
    dev: &CudaDevice,
    (module, name): (&Module, &str),
    inputs: &[CudaView<f32>],
    params: &[u32],
    count: usize,
) -> Result<CudaStorage> {
    if count == 0 {
        let none = dev.alloc_zeros::<f32>(0)?;
        return Ok(CudaStorage::wrap_cuda_slice(none, dev.clone()));
    }
    let (cfg, n) = launch_config(op, count)?;
    let func = dev.get_or_load_custom_func(name, module.name, module.ptx)?;
    // SAFETY: the kernel writes every one of the `n` values.
    let out = unsafe { dev.alloc::<f32>(count) }?;
    let mut builder = func.builder();
    for input in inputs {
        builder.arg(input);
    }
    builder.arg(&out);
    for param in params {
        builder.arg(param);
    }
    builder.arg(&n);
    // SAFETY: the arguments follow the kernel signature described above;
    // each caller checks that its inputs hold what the kernel reads.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// `out = kernel(inputs...)` for the element-wise kernel `name`, over the
/// values of `inputs`, all of the first's dims; returns `out`.
pub(crate) fn map(op: &'static str, name: &str, inputs: &[Arg]) -> Result<CudaStorage> {
    let dims = inputs[0].1.dims();
    let views = inputs
        .iter()
        .map(|(s, l)| cuda_view::<f32>(op, s, l, dims))
        .collect::<Result<Vec<_>>>()?;
    let count = inputs[0].1.shape().elem_count();
    launch(
        op,
        &inputs[0].0.device,
        (&ELEMENTWISE, name),
        &views,
        &[],
        count,
    )
}

/// The operands of a multi-tensor kernel, locked by the caller, each a list
/// with one storage per tensor of the update: the written ones, then the
/// ones only read, in the kernel's order.
pub(crate) struct MultiTensor<'a> {
    /// The operands the kernel writes.
    pub(crate) written: Vec<Vec<(&'a mut Storage, &'a Layout)>>,
    /// The operands the kernel reads.
    pub(crate) read: Vec<Vec<(&'a Storage, &'a Layout)>>,
}

/// Threads per block of a multi-tensor kernel.
const MULTI_TENSOR_THREADS: u32 = 256;

/// Runs the multi-tensor `kernel` of [`ELEMENTWISE`] on `chunks` of
/// tensors of `lens` values: one block a chunk, reading its row of the
/// address table ([`address_table`], with each tensor's `words`; copied to
/// the device) and then the kernel's scalars. Nothing is launched for no
/// chunks.
pub(crate) fn multi_tensor(
    op: &'static str,
    kernel: &Kernel,
    chunks: &[Chunk],
    lens: &[usize],
    operands: MultiTensor,
    words: &[&[u64]],
) -> Result<()> {
    let Some(Storage::Cuda(first)) = operands
        .written
        .first()
        .and_then(|o| o.first())
        .map(|s| &*s.0)
    else {
        candle_core::bail!("{op}: expected tensors on CUDA");
    };
    if chunks.is_empty() {
        return Ok(());
    }
    let dev = first.device.clone();
    let stream = dev.cuda_stream();
    let blocks = u32::try_from(chunks.len()).map_err(|_| {
        candle_core::Error::Msg(format!("{op}: {} chunks are too many", chunks.len()))
    })?;
    let MultiTensor { mut written, read } = operands;
    let mut firsts = vec![Vec::new(); lens.len()];
    // Held until the launch is queued: each records the kernel's use of its
    // buffer where the device tracks events.
    let mut uses = Vec::new();
    for list in written.iter_mut() {
        for (t, (storage, layout)) in list.iter_mut().enumerate() {
            let Storage::Cuda(s) = &mut **storage else {
                candle_core::bail!("{op}: expected tensors on CUDA");
            };
            let start = value_range(op, layout, lens[t])?.start as u64;
            let (ptr, used) = s.as_cuda_slice_mut::<f32>()?.device_ptr_mut(&stream);
            firsts[t].push(ptr + start * VALUE_BYTES);
            uses.push(used);
        }
    }
    for list in &read {
        for (t, (storage, layout)) in list.iter().enumerate() {
            let Storage::Cuda(s) = storage else {
                candle_core::bail!("{op}: expected tensors on CUDA");
            };
            let start = value_range(op, layout, lens[t])?.start as u64;
            let (ptr, used) = s.as_cuda_slice::<f32>()?.device_ptr(&stream);
            firsts[t].push(ptr + start * VALUE_BYTES);
            uses.push(used);
        }
    }
    let table = dev.clone_htod(&address_table(chunks, &firsts, words))?;
    let func = dev.get_or_load_custom_func(kernel.name, ELEMENTWISE.name, ELEMENTWISE.ptx)?;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (MULTI_TENSOR_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = func.builder();
    builder.arg(&table);
    for scalar in kernel.scalars {
        builder.arg(scalar);
    }
    // SAFETY: block b reads row b of the table, the addresses of its
    // chunk's first value in each operand, in the kernel's order, the
    // chunk's length and its tensor's words; every chunk lies within its tensor's values, which the
    // caller holds locked, and no written tensor shares its storage with
    // another operand (`multi_tensor::distinct_storage`).
    unsafe { builder.launch(cfg) }.w()?;
    drop(uses);
    Ok(())
}

/// Threads per block of the loss kernels.
const LOSS_THREADS: u32 = 256;

/// The mean cross-entropy of `logits` (`n * k` values) against `labels`
/// (`n`), targets smoothed by `eps`: one block, whose threads write the rows'
/// losses to a scratch buffer and whose first thread sums them in order.
pub(crate) fn cross_entropy(
    dev: &CudaDevice,
    (logits, labels): (&CudaView<f32>, &CudaView<u32>),
    (n, k): (usize, usize),
    eps: f32,
) -> Result<CudaStorage> {
    let (n, k) = (loss_dim("cross-entropy", n)?, loss_dim("cross-entropy", k)?);
    let func = dev.get_or_load_custom_func("cross_entropy_f32", LOSS.name, LOSS.ptx)?;
    // SAFETY: the kernel writes every row's loss, then the mean.
    let rows = unsafe { dev.alloc::<f32>(n as usize) }?;
    // SAFETY: as for `rows`.
    let loss = unsafe { dev.alloc::<f32>(1) }?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (LOSS_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = func.builder();
    builder.arg(logits).arg(labels).arg(&rows).arg(&loss);
    builder.arg(&n).arg(&k).arg(&eps);
    // SAFETY: the arguments follow the kernel's signature; `logits` holds
    // `n * k` values, `labels` and `rows` `n`.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(loss, dev.clone()))
}

/// The gradient of [`cross_entropy`]'s loss in the logits, scaled by the
/// loss's gradient `dloss` (one value): one thread per row.
pub(crate) fn cross_entropy_grad(
    dev: &CudaDevice,
    (logits, labels, dloss): (&CudaView<f32>, &CudaView<u32>, &CudaView<f32>),
    (n, k): (usize, usize),
    eps: f32,
) -> Result<CudaStorage> {
    let values = n * k;
    let (n, k) = (
        loss_dim("cross-entropy-grad", n)?,
        loss_dim("cross-entropy-grad", k)?,
    );
    let func = dev.get_or_load_custom_func("cross_entropy_grad_f32", LOSS.name, LOSS.ptx)?;
    // SAFETY: the kernel writes every value of every row.
    let grad = unsafe { dev.alloc::<f32>(values) }?;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(LOSS_THREADS), 1, 1),
        block_dim: (LOSS_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = func.builder();
    builder.arg(logits).arg(labels).arg(dloss).arg(&grad);
    builder.arg(&n).arg(&k).arg(&eps);
    // SAFETY: the arguments follow the kernel's signature; `logits` and
    // `grad` hold `n * k` values, `labels` `n`, `dloss` one.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(grad, dev.clone()))
}

/// A dimension of the loss kernels as they take it.
fn loss_dim(op: &str, d: usize) -> Result<u32> {
    u32::try_from(d).map_err(|_| candle_core::Error::Msg(format!("{op}: {d} is too large")))
}
