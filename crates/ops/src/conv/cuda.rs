//! The three convolution ops on NVIDIA GPUs through cuDNN (f32 or bf16,
//! contiguous NCHW, or NHWC for channels-last tensors, the weights then
//! `[O, K, K, C]`): `cudnnConvolutionForward`,
//! `cudnnConvolutionBackwardData` (the input gradient) and
//! `cudnnConvolutionBackwardFilter` (the weight gradient), on the device's
//! stream.
//!
//! cuDNN's heuristics pick each pass's algorithm once per device, geometry
//! and dtype; the choice and its workspace size are cached per thread, as are
//! the cuDNN handles, which are neither `Send` nor `Sync`. cuDNN's default
//! math mode lets it use TF32 tensor cores for f32 on Ampere and newer GPUs,
//! as PyTorch does by default for convolutions, so results differ from the
//! CPU kernels' around the fourth significant digit; the backward-filter
//! algorithms may also sum in a different order from run to run. bf16 runs
//! on tensor cores with f32 sums (cuDNN's pseudo-bf16 configuration: bf16
//! tensors, an f32 convolution descriptor), as PyTorch's bf16 autocast does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::LocalKey;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{
    sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnDataType,
    CudnnError, FilterDescriptor, TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{CudaStorage, DType, Layout, Result};
use half::bf16;

use super::Geometry;
use crate::args::cuda_view;
use crate::format::Format;

/// A custom-op argument: its storage and layout.
type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// The algorithm chosen for each device, geometry and dtype, with the bytes
/// of workspace it needs.
type Choices<A> = RefCell<HashMap<(DeviceId, Geometry, DType), (A, usize)>>;

/// A dtype cuDNN convolves here: its tensors' element, the scaling factors
/// (alpha 1, beta 0) in it, and the math mode its convolutions run in.
trait Element: CudnnDataType<Scalar = f32> + CudaDType + DeviceRepr + ValidAsZeroBits + Copy {
    const DTYPE: DType;
    const ONE: Self;
    const ZERO: Self;
    /// f32: cuDNN's default (TF32 tensor cores where the GPU has them);
    /// bf16: tensor cores.
    const MATH: sys::cudnnMathType_t;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;
    const MATH: sys::cudnnMathType_t = sys::cudnnMathType_t::CUDNN_DEFAULT_MATH;
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    const ONE: Self = bf16::ONE;
    const ZERO: Self = bf16::ZERO;
    const MATH: sys::cudnnMathType_t = sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH;
}

/// Runs `$f::<T>` for the element type of the storage `$s` (f32 or bf16);
/// another dtype is an error naming the op.
macro_rules! by_dtype {
    ($op:expr, $s:expr, $f:ident($($arg:expr),*)) => {
        match $s.dtype() {
            DType::F32 => $f::<f32>($($arg),*),
            DType::BF16 => $f::<bf16>($($arg),*),
            other => Err(candle_core::Error::UnsupportedDTypeForOp(other, $op)),
        }
    };
}

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static FORWARD: Choices<sys::cudnnConvolutionFwdAlgo_t> = RefCell::new(HashMap::new());
    static GRAD_INPUT: Choices<sys::cudnnConvolutionBwdDataAlgo_t> = RefCell::new(HashMap::new());
    static GRAD_WEIGHT: Choices<sys::cudnnConvolutionBwdFilterAlgo_t> =
        RefCell::new(HashMap::new());
}

/// The forward convolution `(x, w) -> y`.
pub(super) fn forward(g: &Geometry, x: Arg, w: Arg) -> Result<CudaStorage> {
    by_dtype!("conv2d", x.0, forward_as(g, x, w))
}

fn forward_as<T: Element>(g: &Geometry, x: Arg, w: Arg) -> Result<CudaStorage> {
    const OP: &str = "conv2d";
    let dev = &x.0.device;
    let x = cuda_view::<T>(OP, x.0, x.1, &g.input_dims())?;
    let w = cuda_view::<T>(OP, w.0, w.1, &g.weight_dims())?;
    let d = Descriptors::<T>::new(dev, g)?;
    let op = ConvForward {
        conv: &d.conv,
        x: &d.x,
        w: &d.w,
        y: &d.y,
    };
    let (algo, bytes) = choose::<_, T>(&FORWARD, dev, g, || {
        let algo = op.pick_algorithm()?;
        Ok((algo, op.get_workspace_size(algo)?))
    })?;
    let mut workspace = workspace(dev, bytes)?;
    // SAFETY: cuDNN writes every output value (beta is 0).
    let mut y = unsafe { dev.alloc::<T>(count(g.output_dims())) }?;
    let scale = (T::ONE, T::ZERO);
    // SAFETY: the descriptors describe `x`, `w` and `y` exactly: contiguous
    // `T` values of the dims checked above, in the geometry's format, on the
    // handle's stream.
    unsafe { op.launch(algo, workspace.as_mut(), scale, &x, &w, &mut y) }?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// The input gradient `(dy, w) -> dx`.
pub(super) fn grad_input(g: &Geometry, dy: Arg, w: Arg) -> Result<CudaStorage> {
    by_dtype!("conv2d-grad-input", dy.0, grad_input_as(g, dy, w))
}

fn grad_input_as<T: Element>(g: &Geometry, dy: Arg, w: Arg) -> Result<CudaStorage> {
    const OP: &str = "conv2d-grad-input";
    let dev = &dy.0.device;
    let dy = cuda_view::<T>(OP, dy.0, dy.1, &g.output_dims())?;
    let w = cuda_view::<T>(OP, w.0, w.1, &g.weight_dims())?;
    let d = Descriptors::<T>::new(dev, g)?;
    let op = ConvBackwardData {
        conv: &d.conv,
        dx: &d.x,
        w: &d.w,
        dy: &d.y,
    };
    let (algo, bytes) = choose::<_, T>(&GRAD_INPUT, dev, g, || {
        let algo = op.pick_algorithm()?;
        Ok((algo, op.get_workspace_size(algo)?))
    })?;
    let mut workspace = workspace(dev, bytes)?;
    // SAFETY: cuDNN writes every output value (beta is 0).
    let mut dx = unsafe { dev.alloc::<T>(count(g.input_dims())) }?;
    let scale = (T::ONE, T::ZERO);
    // SAFETY: as in `forward_as`.
    unsafe { op.launch(algo, workspace.as_mut(), scale, &mut dx, &w, &dy) }?;
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}

/// The weight gradient `(x, dy) -> dw`.
pub(super) fn grad_weight(g: &Geometry, x: Arg, dy: Arg) -> Result<CudaStorage> {
    by_dtype!("conv2d-grad-weight", x.0, grad_weight_as(g, x, dy))
}

fn grad_weight_as<T: Element>(g: &Geometry, x: Arg, dy: Arg) -> Result<CudaStorage> {
    const OP: &str = "conv2d-grad-weight";
    let dev = &x.0.device;
    let x = cuda_view::<T>(OP, x.0, x.1, &g.input_dims())?;
    let dy = cuda_view::<T>(OP, dy.0, dy.1, &g.output_dims())?;
    let d = Descriptors::<T>::new(dev, g)?;
    let op = ConvBackwardFilter {
        conv: &d.conv,
        x: &d.x,
        dw: &d.w,
        dy: &d.y,
    };
    let (algo, bytes) = choose::<_, T>(&GRAD_WEIGHT, dev, g, || {
        let algo = op.pick_algorithm()?;
        Ok((algo, op.get_workspace_size(algo)?))
    })?;
    let mut workspace = workspace(dev, bytes)?;
    // SAFETY: cuDNN writes every output value (beta is 0).
    let mut dw = unsafe { dev.alloc::<T>(count(g.weight_dims())) }?;
    let scale = (T::ONE, T::ZERO);
    // SAFETY: as in `forward_as`.
    unsafe { op.launch(algo, workspace.as_mut(), scale, &x, &mut dw, &dy) }?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}

/// The cuDNN descriptors of one geometry: the convolution (f32, the dtype
/// of its sums), the input (and its gradient), the weight (and its
/// gradient), the output (and its gradient), all of element `T`.
struct Descriptors<T: Element> {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
}

impl<T: Element> Descriptors<T> {
    fn new(dev: &CudaDevice, g: &Geometry) -> Result<Self> {
        let cudnn = handle(dev)?;
        // Dims are NCHW (OIHW) whatever the format, which says where the
        // values lie.
        let format = match g.format {
            Format::Nchw => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
            Format::Nhwc => sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
        };
        let (pad, stride) = (to_i32(g.pad)?, to_i32(g.stride)?);
        let mut conv = cudnn.create_conv2d::<f32>(
            [pad, pad],
            [stride, stride],
            [1, 1],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )?;
        conv.set_math_type(T::MATH)?;
        Ok(Self {
            conv,
            x: cudnn.create_4d_tensor::<T>(format, dims(g.input_nchw())?)?,
            w: cudnn.create_4d_filter::<T>(format, dims(g.weight_nchw())?)?,
            y: cudnn.create_4d_tensor::<T>(format, dims(g.output_nchw())?)?,
        })
    }
}

/// This thread's cuDNN handle for `dev`, on the device's stream.
fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|handles| {
        if let Some(found) = handles.borrow().get(&dev.id()) {
            return Ok(Arc::clone(found));
        }
        let cudnn = Cudnn::new(dev.cuda_stream())?;
        handles.borrow_mut().insert(dev.id(), Arc::clone(&cudnn));
        Ok(cudnn)
    })
}

/// The cached choice for `dev`, `g` and `T`, or the one `pick` makes, cached.
fn choose<A: Copy, T: Element>(
    cache: &'static LocalKey<Choices<A>>,
    dev: &CudaDevice,
    g: &Geometry,
    pick: impl FnOnce() -> std::result::Result<(A, usize), CudnnError>,
) -> Result<(A, usize)> {
    let key = (dev.id(), *g, T::DTYPE);
    if let Some(found) = cache.with(|c| c.borrow().get(&key).copied()) {
        return Ok(found);
    }
    let chosen = pick()?;
    cache.with(|c| c.borrow_mut().insert(key, chosen));
    Ok(chosen)
}

/// A workspace of `bytes` bytes, none when the algorithm needs none.
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: a workspace is scratch memory; cuDNN reads nothing it did not write.
    Ok(Some(unsafe { dev.alloc::<u8>(bytes) }?))
}

/// The number of values of a tensor of `dims`.
fn count(dims: [usize; 4]) -> usize {
    dims.iter().product()
}

/// Dims as cuDNN takes them.
fn dims(d: [usize; 4]) -> Result<[i32; 4]> {
    Ok([to_i32(d[0])?, to_i32(d[1])?, to_i32(d[2])?, to_i32(d[3])?])
}

/// A size as cuDNN takes it, or an error naming it.
fn to_i32(v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("conv2d: {v} is too large for cuDNN")))
}
