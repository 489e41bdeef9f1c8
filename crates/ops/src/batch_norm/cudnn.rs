//! The launches of training-mode batch norm on NVIDIA GPUs: cuDNN's spatial
//! batch norm (`cudnnBatchNormalizationForwardTraining` and
//! `cudnnBatchNormalizationBackward`), f32, NCHW or NHWC, on the device's
//! stream.
//!
//! Nothing else lives here: the ops that call these functions, their
//! argument checks, the statistics they save, the packing of the backward
//! output ([`Packed`]) and the backward composition are `saved.rs`'s,
//! compiled and tested on the CPU.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::cudnn::{result, sys};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CudaStorage, Result};

use super::saved::Packed;
use super::Dims;
use crate::format::Format;

const MODE: sys::cudnnBatchNormMode_t = sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// `y` and the saved statistics (`[mean; inv_std]`, `2*C` values, for each
/// group of images in turn) of `[x, weight, bias]`, checked by the caller
/// to hold `dims`' values; one cuDNN call per group.
pub(super) fn forward(
    dev: &CudaDevice,
    d: Dims,
    eps: f64,
    [x, weight, bias]: [CudaView<f32>; 3],
) -> Result<(CudaStorage, CudaSlice<f32>)> {
    // SAFETY: the groups' cuDNN calls write all of `out` (y) and of `stats`
    // (each group's saved mean and inv_std).
    let mut out = unsafe { dev.alloc::<f32>(Packed::new(d).data().len()) }?;
    // SAFETY: as for `out`.
    let mut stats = unsafe { dev.alloc::<f32>(2 * d.c * d.group_count()) }?;
    // Running averages, which this crate keeps itself: cuDNN writes them
    // (with factor 1, ignoring what was there) and nothing reads them.
    // SAFETY: as for `out`.
    let mut running = unsafe { dev.alloc::<f32>(2 * d.c) }?;
    let stream = dev.cuda_stream();
    let (x, _x) = x.device_ptr(&stream);
    let (weight, _w) = weight.device_ptr(&stream);
    let (bias, _b) = bias.device_ptr(&stream);
    let (y, _y) = out.device_ptr_mut(&stream);
    let (saved, _s) = stats.device_ptr_mut(&stream);
    let (running_mean, _r) = running.device_ptr_mut(&stream);
    let running_var = offset(running_mean, d.c);
    let (one, zero) = (1f32, 0f32);
    for (g, (values, part)) in d.groups().enumerate() {
        let desc = Descriptors::new(part)?;
        let (x, y) = (offset(x, values.start), offset(y, values.start));
        let mean = offset(saved, 2 * d.c * g);
        let inv_std = offset(mean, d.c);
        with_handle(dev, |handle| {
            // SAFETY: the descriptors describe the buffers: x and y the
            // group's contiguous `[n, C, H*W, 1]` values in `d`'s format, the
            // others `[C]`; the handle is on the device's stream.
            unsafe {
                sys::cudnnBatchNormalizationForwardTraining(
                    handle,
                    MODE,
                    scalar(&one),
                    scalar(&zero),
                    desc.data.0,
                    x as *const c_void,
                    desc.data.0,
                    y as *mut c_void,
                    desc.channel.0,
                    weight as *const c_void,
                    bias as *const c_void,
                    1.0,
                    running_mean as *mut c_void,
                    running_var as *mut c_void,
                    eps,
                    mean as *mut c_void,
                    inv_std as *mut c_void,
                )
            }
            .result()?;
            Ok(())
        })?;
    }
    drop((_x, _w, _b, _y, _s, _r));
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), stats))
}

/// `[dx, dweight, dbias]` (laid out as [`Packed`]) of `[x, dy, weight]` and
/// the statistics `stats` ([`forward`]'s, with the same `eps`), the
/// parameters' gradients summed over the groups (cuDNN adds each group's
/// into them); checked by the caller to hold `dims`' values.
pub(super) fn backward(
    dev: &CudaDevice,
    d: Dims,
    eps: f64,
    [x, dy, weight]: [CudaView<f32>; 3],
    stats: &CudaSlice<f32>,
) -> Result<CudaStorage> {
    let at = Packed::new(d);
    // SAFETY: cuDNN writes all of it: dx group by group, and dweight and
    // dbias (beta 0 for the first group, which the others add to).
    let mut out = unsafe { dev.alloc::<f32>(at.total()) }?;
    let stream = dev.cuda_stream();
    let (x, _x) = x.device_ptr(&stream);
    let (dy, _dy) = dy.device_ptr(&stream);
    let (weight, _w) = weight.device_ptr(&stream);
    let (saved, _s) = stats.device_ptr(&stream);
    let (dx, _dx) = out.device_ptr_mut(&stream);
    let (dweight, dbias) = (offset(dx, at.first().start), offset(dx, at.second().start));
    let (one, zero) = (1f32, 0f32);
    for (g, (values, part)) in d.groups().enumerate() {
        let desc = Descriptors::new(part)?;
        let (x, dy, dx) = (
            offset(x, values.start),
            offset(dy, values.start),
            offset(dx, values.start),
        );
        let mean = offset(saved, 2 * d.c * g);
        let inv_std = offset(mean, d.c);
        let param_beta = if g == 0 { &zero } else { &one };
        with_handle(dev, |handle| {
            // SAFETY: as in the forward pass; `mean` and `inv_std` are what
            // the forward pass saved for this group with the same `eps`.
            unsafe {
                sys::cudnnBatchNormalizationBackward(
                    handle,
                    MODE,
                    scalar(&one),
                    scalar(&zero),
                    scalar(&one),
                    scalar(param_beta),
                    desc.data.0,
                    x as *const c_void,
                    desc.data.0,
                    dy as *const c_void,
                    desc.data.0,
                    dx as *mut c_void,
                    desc.channel.0,
                    weight as *const c_void,
                    dweight as *mut c_void,
                    dbias as *mut c_void,
                    eps,
                    mean as *const c_void,
                    inv_std as *const c_void,
                )
            }
            .result()?;
            Ok(())
        })?;
    }
    drop((_x, _dy, _w, _s, _dx));
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// The address `values` f32 values past `ptr`.
fn offset(ptr: u64, values: usize) -> u64 {
    ptr + (values * std::mem::size_of::<f32>()) as u64
}

/// A host scalar as cuDNN takes its scaling factors.
fn scalar(value: &f32) -> *const c_void {
    value as *const f32 as *const c_void
}

/// A cuDNN tensor descriptor, destroyed on drop.
struct TensorDesc(sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    /// A contiguous f32 descriptor of NCHW dims `dims`, its values in
    /// `format`'s order.
    fn new(dims: [usize; 4], format: Format) -> Result<Self> {
        let mut sizes = [0i32; 4];
        for (size, dim) in sizes.iter_mut().zip(dims) {
            *size = i32::try_from(dim).map_err(|_| {
                candle_core::Error::Msg(format!("batch norm: {dim} is too large for cuDNN"))
            })?;
        }
        let desc = Self(result::create_tensor_descriptor()?);
        // SAFETY: a descriptor just created.
        unsafe {
            result::set_tensor4d_descriptor(
                desc.0,
                match format {
                    Format::Nchw => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                    Format::Nhwc => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                },
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                sizes,
            )
        }?;
        Ok(desc)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `new` and destroyed only here. A failure leaks it.
        let _ = unsafe { result::destroy_tensor_descriptor(self.0) };
    }
}

/// The descriptors of one batch norm: the data (`x`, `y` and their
/// gradients, as `[N, C, H*W, 1]` in the format of `Dims`) and the
/// per-channel tensors (`[1, C, 1, 1]`).
struct Descriptors {
    data: TensorDesc,
    channel: TensorDesc,
}

impl Descriptors {
    fn new(d: Dims) -> Result<Self> {
        Ok(Self {
            data: TensorDesc::new(d.nchw(), d.format)?,
            channel: TensorDesc::new([1, d.c, 1, 1], Format::Nchw)?,
        })
    }
}

/// A cuDNN handle, destroyed on drop.
struct Handle(sys::cudnnHandle_t);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by `with_handle` and destroyed only here.
        let _ = unsafe { result::destroy_handle(self.0) };
    }
}

thread_local! {
    /// This thread's cuDNN handle for each device (handles are not `Send`).
    static HANDLES: RefCell<HashMap<DeviceId, Handle>> = RefCell::new(HashMap::new());
}

/// Runs `f` with this thread's cuDNN handle for `dev`, on the device's stream,
/// with the device's context current.
fn with_handle(dev: &CudaDevice, f: impl FnOnce(sys::cudnnHandle_t) -> Result<()>) -> Result<()> {
    let stream = dev.cuda_stream();
    stream.context().bind_to_thread()?;
    let handle = HANDLES.with(|handles| -> Result<sys::cudnnHandle_t> {
        if let Some(found) = handles.borrow().get(&dev.id()) {
            return Ok(found.0);
        }
        let handle = Handle(result::create_handle()?);
        // SAFETY: a valid handle and the device's live stream.
        unsafe { result::set_stream(handle.0, stream.cu_stream() as sys::cudaStream_t) }?;
        let raw = handle.0;
        handles.borrow_mut().insert(dev.id(), handle);
        Ok(raw)
    })?;
    f(handle)
}
