//! Copies of batches from host memory to a device through page-locked
//! ("pinned") host buffers, as PyTorch's `pin_memory` and
//! `non_blocking=True` do.
//!
//! A copy from ordinary (pageable) host memory goes through the driver's
//! own small page-locked buffers: for a batch larger than those, the call
//! returns only once the GPU has taken in most of it, and so waits for
//! every kernel queued before the copy on its stream: the training step
//! before it. From a page-locked buffer the copy is queued and the call
//! returns at once. [`HostStaging`] keeps two such buffers and takes them in
//! turn, so that a batch is written into one while the other may still be
//! on its way to the GPU.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use crate::dispatch::{has_own_kernel, CudaKernel};
use crate::OpsError;

const OP: &str = "host_staging";

/// Copies f32 batches to a device: on an NVIDIA GPU through two
/// page-locked host buffers used in turn, each as large as the last batch
/// it held; elsewhere, or where `RESNET_CUDA_KERNELS` leaves out `staging`,
/// as [`Tensor::from_slice`] does.
#[derive(Default)]
pub struct HostStaging {
    /// A one-value tensor on the last device copied to, which the copy op
    /// runs on.
    anchor: Option<Tensor>,
    /// The page-locked buffers.
    #[cfg(feature = "cuda")]
    pinned: cuda::Pinned,
}

impl std::fmt::Debug for HostStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostStaging").finish_non_exhaustive()
    }
}

impl HostStaging {
    /// `values` as a tensor of `dims` on `device`, whose values must number
    /// the product of `dims` (an error names both otherwise).
    pub fn to_device(
        &mut self,
        values: &[f32],
        dims: &[usize],
        device: &Device,
    ) -> Result<Tensor, OpsError> {
        if values.len() != dims.iter().product::<usize>() {
            return Err(OpsError::Incompatible {
                op: OP,
                detail: format!("{} values cannot fill dims {dims:?}", values.len()),
            });
        }
        if !has_own_kernel(CudaKernel::Staging, device, DType::F32) || values.is_empty() {
            return Ok(Tensor::from_slice(values, dims, device)?);
        }
        let anchor = match &self.anchor {
            Some(anchor) if anchor.device().same_device(device) => anchor.clone(),
            _ => {
                let anchor = Tensor::zeros(1, DType::F32, device)?;
                self.anchor = Some(anchor.clone());
                anchor
            }
        };
        let copy = Copy {
            values,
            dims,
            #[cfg(feature = "cuda")]
            pinned: std::sync::Mutex::new(&mut self.pinned),
        };
        Ok(anchor.apply_op1_no_bwd(&copy)?)
    }
}

/// The copy of one batch, an op on the device's anchor tensor whose output
/// is the batch.
struct Copy<'a> {
    values: &'a [f32],
    dims: &'a [usize],
    #[cfg(feature = "cuda")]
    pinned: std::sync::Mutex<&'a mut cuda::Pinned>,
}

impl CustomOp1 for Copy<'_> {
    fn name(&self) -> &'static str {
        "host-staging-copy"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((
            CpuStorage::F32(self.values.to_vec()),
            Shape::from(self.dims),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        anchor: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let mut pinned = self
            .pinned
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{OP}: a copy failed before")))?;
        let copied = pinned.copy(&anchor.device, self.values)?;
        Ok((copied, Shape::from(self.dims)))
    }
}

/// The page-locked buffers and their copies (the CUDA-only part).
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaEvent, PinnedHostSlice};
    use candle_core::cuda_backend::{CudaDevice, WrapErr};
    use candle_core::{CudaStorage, Result};
    use rayon::prelude::*;

    /// Values per parallel task of the copy into a page-locked buffer.
    const CHUNK: usize = 1 << 18;

    /// Two page-locked buffers, taken in turn, each with an event recorded
    /// after its last copy.
    ///
    /// The events are this type's own: a page-locked buffer's own event,
    /// which its accessors and its drop wait for, is recorded only when the
    /// context runs several streams, and candle's device runs one (the
    /// context's default stream), so waiting for it returns at once even
    /// while a copy from the buffer is still queued.
    #[derive(Default)]
    pub(super) struct Pinned {
        buffers: [Option<PinnedHostSlice<f32>>; 2],
        copied: [Option<CudaEvent>; 2],
        next: usize,
    }

    impl Pinned {
        /// `values` on `dev`: written into the next buffer once its last
        /// copy has left it, and copied from there on the device's stream.
        pub(super) fn copy(&mut self, dev: &CudaDevice, values: &[f32]) -> Result<CudaStorage> {
            let i = self.next;
            self.next = 1 - i;
            if let Some(event) = self.copied[i].take() {
                event.synchronize().w()?;
            }
            let slot = &mut self.buffers[i];
            let stream = dev.cuda_stream();
            if slot.as_ref().is_none_or(|b| b.len() != values.len()) {
                *slot = None;
                // SAFETY: every value is written below before the buffer is
                // read.
                *slot = Some(unsafe { stream.context().alloc_pinned::<f32>(values.len()) }.w()?);
            }
            let Some(buffer) = slot.as_mut() else {
                candle_core::bail!("host_staging: no page-locked buffer");
            };
            let host = buffer.as_mut_slice().w()?;
            host.par_chunks_mut(CHUNK)
                .zip(values.par_chunks(CHUNK))
                .for_each(|(to, from)| to.copy_from_slice(from));
            // SAFETY: the copy below writes every value.
            let mut device_values = unsafe { dev.alloc::<f32>(values.len()) }?;
            dev.memcpy_htod(&*buffer, &mut device_values)?;
            self.copied[i] = Some(stream.record_event(None).w()?);
            Ok(CudaStorage::wrap_cuda_slice(device_values, dev.clone()))
        }
    }

    impl Drop for Pinned {
        /// Frees the buffers only once no queued copy reads them.
        fn drop(&mut self) {
            for event in self.copied.iter().flatten() {
                // Nothing to do about a failed wait in a drop: the context
                // has failed, and freeing the buffers fails too.
                let _ = event.synchronize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

    #[test]
    fn batches_arrive_with_their_values_and_dims() {
        let mut staging = HostStaging::default();
        let dev = Device::Cpu;
        // Batches in turn, of two sizes, as a last short batch would come.
        for (k, dims) in [[2, 3, 4, 4], [2, 3, 4, 4], [1, 3, 4, 4], [2, 3, 4, 4]]
            .iter()
            .enumerate()
        {
            let n: usize = dims.iter().product();
            let host: Vec<f32> = (0..n).map(|i| (i * (k + 1)) as f32).collect();
            let t = staging.to_device(&host, dims, &dev).unwrap();
            assert_eq!(t.dims(), dims, "batch {k}");
            assert_eq!(values(&t), host, "batch {k}");
        }
        let empty = staging.to_device(&[], &[0, 3, 4, 4], &dev).unwrap();
        assert_eq!(empty.dims(), [0, 3, 4, 4]);
    }

    #[test]
    fn values_that_do_not_fill_the_dims_are_an_error_naming_both() {
        let err = HostStaging::default()
            .to_device(&[1.0; 5], &[2, 3], &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("5 values") && err.contains("[2, 3]"), "{err}");
    }
}
