//! Training-mode batch norm on NVIDIA GPUs through cuDNN's spatial batch
//! norm (`cudnnBatchNormalizationForwardTraining` and
//! `cudnnBatchNormalizationBackward`), f32 NCHW, on the device's stream.
//!
//! The forward op returns one flat tensor `[y, mean, inv_std]` (`N*C*H*W +
//! 2*C` values): `y` is a view of it, and the batch mean and inverse standard
//! deviation cuDNN saves are both what the backward pass reuses and what
//! [`super::batch_norm_train`] returns (the biased variance as
//! `1 / inv_std^2 - eps`). The backward op returns `[dx, dweight, dbias]` in
//! one flat tensor, as on the CPU.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::cudnn::{result, sys};
use candle_core::cuda_backend::cudarc::driver::{CudaView, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::{BatchNormOutput, Dims};
use crate::kernel::cuda_f32_view;
use crate::OpsError;

const MODE: sys::cudnnBatchNormMode_t = sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// Runs [`Forward`] on contiguous f32 CUDA tensors.
pub(super) fn train(
    dims: Dims,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> std::result::Result<BatchNormOutput, OpsError> {
    let (len, c) = (x.elem_count(), dims.c);
    let packed = x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Forward { dims, eps },
    )?;
    let inv_std = packed.narrow(0, len + c, c)?.detach();
    Ok(BatchNormOutput {
        y: packed.narrow(0, 0, len)?.reshape(x.shape())?,
        mean: packed.narrow(0, len, c)?.detach(),
        var: (inv_std.sqr()?.recip()? - eps)?,
    })
}

/// The training forward `(x, weight, bias) -> [y, mean, inv_std]`.
struct Forward {
    dims: Dims,
    eps: f64,
}

impl CustomOp3 for Forward {
    fn name(&self) -> &'static str {
        "batch-norm-train-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: runs on CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (d, name) = (self.dims, self.name());
        let dev = &xs.device;
        let x = cuda_f32_view(name, xs, xl, xl.dims())?;
        let weight = cuda_f32_view(name, ws, wl, &[d.c])?;
        let bias = cuda_f32_view(name, bs, bl, &[d.c])?;
        let len = x.len();
        // SAFETY: cuDNN writes all of it: y, the saved mean and inv_std.
        let mut out = unsafe { dev.alloc::<f32>(len + 2 * d.c) }?;
        // Running averages, which this crate keeps itself: cuDNN writes them
        // (with factor 1, ignoring what was there) and nothing reads them.
        // SAFETY: as for `out`.
        let mut running = unsafe { dev.alloc::<f32>(2 * d.c) }?;
        let desc = Descriptors::new(d)?;
        let stream = dev.cuda_stream();
        let (x, _x) = x.device_ptr(&stream);
        let (weight, _w) = weight.device_ptr(&stream);
        let (bias, _b) = bias.device_ptr(&stream);
        let (y, _y) = out.device_ptr_mut(&stream);
        let (mean, inv_std) = (offset(y, len), offset(y, len + d.c));
        let (running_mean, _r) = running.device_ptr_mut(&stream);
        let running_var = offset(running_mean, d.c);
        let (one, zero) = (1f32, 0f32);
        with_handle(dev, |handle| {
            // SAFETY: the descriptors describe the buffers: x and y
            // contiguous `[N, C, H*W, 1]`, the others `[C]`; the handle is on
            // the device's stream.
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
                    self.eps,
                    mean as *mut c_void,
                    inv_std as *mut c_void,
                )
            }
            .result()?;
            Ok(())
        })?;
        drop((_x, _w, _b, _y, _r));
        let shape = Shape::from(out.len());
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        packed: &Tensor,
        dpacked: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (len, c) = (x.elem_count(), self.dims.c);
        let dy = dpacked.narrow(0, 0, len)?.contiguous()?;
        let saved = Tensor::cat(&[weight, &packed.narrow(0, len, 2 * c)?], 0)?;
        let grad = Backward {
            dims: self.dims,
            eps: self.eps,
        };
        let grads = x.apply_op3_no_bwd(&dy, &saved, &grad)?;
        Ok((
            x.track_op()
                .then(|| grads.narrow(0, 0, len)?.reshape(x.shape()))
                .transpose()?,
            weight
                .track_op()
                .then(|| grads.narrow(0, len, c))
                .transpose()?,
            bias.track_op()
                .then(|| grads.narrow(0, len + c, c))
                .transpose()?,
        ))
    }
}

/// The backward pass `(x, dy, [weight, mean, inv_std]) -> [dx, dweight,
/// dbias]` of [`Forward`].
struct Backward {
    dims: Dims,
    eps: f64,
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "batch-norm-train-cuda-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: runs on CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        dys: &CudaStorage,
        dyl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (d, name) = (self.dims, self.name());
        let dev = &xs.device;
        let x = cuda_f32_view(name, xs, xl, xl.dims())?;
        let dy = cuda_f32_view(name, dys, dyl, xl.dims())?;
        let saved: CudaView<f32> = cuda_f32_view(name, ss, sl, &[3 * d.c])?;
        let len = x.len();
        // SAFETY: cuDNN writes all of it (betas are 0): dx, dweight, dbias.
        let mut out = unsafe { dev.alloc::<f32>(len + 2 * d.c) }?;
        let desc = Descriptors::new(d)?;
        let stream = dev.cuda_stream();
        let (x, _x) = x.device_ptr(&stream);
        let (dy, _dy) = dy.device_ptr(&stream);
        let (weight, _s) = saved.device_ptr(&stream);
        let (mean, inv_std) = (offset(weight, d.c), offset(weight, 2 * d.c));
        let (dx, _dx) = out.device_ptr_mut(&stream);
        let (dweight, dbias) = (offset(dx, len), offset(dx, len + d.c));
        let (one, zero) = (1f32, 0f32);
        with_handle(dev, |handle| {
            // SAFETY: as in the forward pass; `mean` and `inv_std` are what
            // the forward pass saved with the same `eps`.
            unsafe {
                sys::cudnnBatchNormalizationBackward(
                    handle,
                    MODE,
                    scalar(&one),
                    scalar(&zero),
                    scalar(&one),
                    scalar(&zero),
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
                    self.eps,
                    mean as *const c_void,
                    inv_std as *const c_void,
                )
            }
            .result()?;
            Ok(())
        })?;
        drop((_x, _dy, _s, _dx));
        let shape = Shape::from(out.len());
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
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
    /// A contiguous f32 NCHW descriptor of `dims`.
    fn new(dims: [usize; 4]) -> Result<Self> {
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
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
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
/// gradients, as `[N, C, H*W, 1]`) and the per-channel tensors (`[1, C, 1, 1]`).
struct Descriptors {
    data: TensorDesc,
    channel: TensorDesc,
}

impl Descriptors {
    fn new(d: Dims) -> Result<Self> {
        Ok(Self {
            data: TensorDesc::new([d.n, d.c, d.plane, 1])?,
            channel: TensorDesc::new([1, d.c, 1, 1])?,
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
