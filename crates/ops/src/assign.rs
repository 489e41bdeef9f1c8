//! Setting many variables to new values in one pass.

use candle_core::{Tensor, Var};

use crate::multi_tensor::{self, Kernel, Tensors};
use crate::OpsError;

const OP: &str = "set_all";

/// Sets every variable of `pairs` to its value, in place: what [`Var::set`]
/// does one variable at a time. Each value must have its variable's shape
/// and dtype, and no variable may share storage with another variable or a
/// value (an error says which do); values may share theirs (views of one
/// tensor, say).
///
/// When every tensor is f32 on one CPU or CUDA device, one pass of this
/// crate's kernels sets them all (on CUDA one launch); otherwise each runs
/// [`Var::set`].
pub fn set_all(pairs: &[(&Var, &Tensor)]) -> Result<(), OpsError> {
    let tensors: Vec<Tensors<1, 1>> = pairs
        .iter()
        .map(|(var, value)| Tensors {
            written: [("variable", var.as_tensor())],
            read: [("value", *value)],
            words: &[],
        })
        .collect();
    if !multi_tensor::fits_one_pass(OP, "variable", &tensors)? {
        for (var, value) in pairs {
            var.set(value)?;
        }
        return Ok(());
    }
    let kernel = Kernel {
        name: "copy_f32",
        scalars: &[],
    };
    multi_tensor::update(OP, "variable", &tensors, kernel, |_, [var], [value]| {
        var.copy_from_slice(value)
    })
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::test_util::{random, values};

    #[test]
    fn every_variable_gets_its_value() {
        // Several chunks, an empty variable, and values that are views of
        // one tensor, one of them strided.
        let shapes: [&[usize]; 4] = [&[3, 70_001], &[0], &[5], &[2, 3]];
        let vars: Vec<Var> = (0..)
            .zip(shapes)
            .map(|(k, s)| Var::from_tensor(&random(s, k)).unwrap())
            .collect();
        let flat = random(&[5 + 6], 9);
        let strided = random(&[3, 2], 10).t().unwrap();
        let values_: Vec<Tensor> = vec![
            random(shapes[0], 20),
            random(shapes[1], 21),
            flat.narrow(0, 0, 5).unwrap(),
            strided,
        ];
        let pairs: Vec<_> = vars.iter().zip(&values_).collect();
        set_all(&pairs).unwrap();
        for (k, (var, value)) in pairs.iter().enumerate() {
            assert_eq!(values(var.as_tensor()), values(value), "variable {k}");
        }
    }

    #[test]
    fn shared_storage_and_mismatches_are_errors_naming_them() {
        let a = Var::from_tensor(&random(&[4], 0)).unwrap();
        let b = Var::from_tensor(&random(&[4], 1)).unwrap();
        let err = set_all(&[(&a, b.as_tensor()), (&b, a.as_tensor())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("share their storage"), "{err}");
        let err = set_all(&[(&a, &random(&[5], 2))]).unwrap_err().to_string();
        assert!(err.contains("variable 0") && err.contains("[5]"), "{err}");
        let wide = Var::from_tensor(&random(&[2], 3).to_dtype(DType::F64).unwrap()).unwrap();
        let value = Tensor::new(&[1.0f64, 2.0], &candle_core::Device::Cpu).unwrap();
        set_all(&[(&wide, &value)]).unwrap();
        assert_eq!(wide.as_tensor().to_vec1::<f64>().unwrap(), [1.0, 2.0]);
    }
}
