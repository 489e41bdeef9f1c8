//! Matrix products in any dtype the model multiplies in, on every device.

use candle_core::{DType, Tensor};

use crate::OpsError;

/// `a.matmul(b)`, also for bf16 operands on the CPU, where candle has no
/// bf16 product: there they are multiplied in f32 (exactly: a bf16 value is
/// an f32 value) with f32 sums and the product rounded to bf16, as a GPU's
/// bf16 product with f32 accumulation returns it.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, OpsError> {
    if a.dtype() == DType::BF16 && a.device().is_cpu() {
        let product = a.to_dtype(DType::F32)?.matmul(&b.to_dtype(DType::F32)?)?;
        return Ok(product.to_dtype(DType::BF16)?);
    }
    Ok(a.matmul(b)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::matmul;

    #[test]
    fn a_bf16_product_on_the_cpu_is_the_f32_product_of_its_operands_rounded() {
        let a = Tensor::randn(0f32, 1.0, (5, 7), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (7, 3), &Device::Cpu).unwrap();
        let (a16, b16) = (
            a.to_dtype(DType::BF16).unwrap(),
            b.to_dtype(DType::BF16).unwrap(),
        );
        let got = matmul(&a16, &b16).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let want = f32(&a16)
            .matmul(&f32(&b16))
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let bits = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(bits(&got), bits(&want));
        // Rounding the operands changes the product: the test sees bf16.
        assert_ne!(bits(&got), a.matmul(&b).unwrap().to_vec2::<f32>().unwrap());
    }
}
