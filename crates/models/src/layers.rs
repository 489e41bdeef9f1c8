//! The typed layers of a ResNet: conv + batch norm pairs and the fc head.

use std::cell::RefCell;
use std::num::NonZeroUsize;

use candle_core::{DType, Tensor, Var};
use resnet_ops::{InferenceConv, RunningUpdate};

use crate::init::Initializer;
use crate::plan::ConvPlan;
use crate::precision::Precision;
use crate::ModelError;

/// Whether a tensor is learned by the optimizer or tracked by batch norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// A learnable parameter (conv/fc weight, fc bias, BN weight/bias).
    Parameter,
    /// A BN running statistic (`running_mean`, `running_var`): saved, not learned.
    RunningStat,
}

/// A model tensor with its torchvision name.
#[derive(Debug, Clone)]
pub struct NamedVar {
    /// Full name, e.g. `layer1.0.bn1.running_mean`.
    pub name: String,
    /// The tensor itself (shared with the model: setting it changes the model).
    pub var: Var,
    /// Parameter or running statistic.
    pub kind: TensorKind,
}

/// What a traced forward pass records besides its output.
#[derive(Debug, Default)]
pub struct Trace {
    /// The response of every 3x3 conv after its BN and before the ReLU or the
    /// addition (the paper's Fig. 7), named by the BN, in network order.
    pub responses: Vec<(String, Tensor)>,
    /// Multiply-adds of the convs and fc per image, counted from the tensors
    /// that actually flowed through the net.
    pub macs: usize,
}

fn push(out: &mut Vec<NamedVar>, prefix: &str, field: &str, var: &Var, kind: TensorKind) {
    out.push(NamedVar {
        name: format!("{prefix}.{field}"),
        var: var.clone(),
        kind,
    });
}

/// How a forward pass runs its batch norms.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pass<'a> {
    /// With their running statistics.
    Eval,
    /// With each batch's statistics, the moves of the running statistics
    /// gathered in a [`RunningMoves`] to be made after the pass.
    Train(&'a RunningMoves),
}

/// The moves of batch norms' running statistics that a training pass
/// gathers, made together after it ([`RunningMoves::apply`]): one pass over
/// all of them, on CUDA one launch for the network, instead of two per
/// batch norm. Nothing reads a running statistic during a training pass, so
/// the values are the same as if each batch norm moved its own.
#[derive(Debug, Default)]
pub(crate) struct RunningMoves(RefCell<Vec<(Var, Tensor, f64)>>);

impl RunningMoves {
    /// Gathers the move of `running` towards `batch` times `scale`.
    fn push(&self, running: &Var, batch: Tensor, scale: f64) {
        self.0.borrow_mut().push((running.clone(), batch, scale));
    }

    /// Makes every move gathered, with PyTorch's momentum of 0.1.
    pub(crate) fn apply(self) -> Result<(), ModelError> {
        let moves = self.0.into_inner();
        let updates: Vec<RunningUpdate> = moves
            .iter()
            .map(|(running, batch, scale)| RunningUpdate {
                running,
                batch,
                scale: *scale,
            })
            .collect();
        resnet_ops::update_running_stats(&updates, BN_MOMENTUM)?;
        Ok(())
    }
}

/// Batch normalisation with running statistics (PyTorch semantics: eps 1e-5,
/// momentum 0.1, running variance updated with the unbiased batch variance).
///
/// With a `group` of N images, train mode normalises each run of N images of
/// the batch with that run's own statistics, as each of the paper's GPUs did
/// with its share of the batch (see [`crate::ResNet::with_bn_group`]).
#[derive(Debug)]
pub(crate) struct BatchNorm {
    name: String,
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    group: Option<NonZeroUsize>,
}

const BN_EPS: f64 = 1e-5;

/// What follows a batch norm, applied in its pass where a kernel can.
#[derive(Debug, Clone, Copy)]
pub(crate) enum After<'a> {
    /// Nothing: the batch norm's output as it is.
    Nothing,
    /// A ReLU.
    Relu,
    /// The residual join with this shortcut (the output's shape), then the
    /// block's ReLU.
    AddRelu(&'a Tensor),
}
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    fn new(name: String, channels: usize, init: &Initializer) -> Result<BatchNorm, ModelError> {
        Ok(BatchNorm {
            name,
            weight: init.constant(&[channels], 1.0)?,
            bias: init.constant(&[channels], 0.0)?,
            running_mean: init.constant(&[channels], 0.0)?,
            running_var: init.constant(&[channels], 1.0)?,
            group: None,
        })
    }

    /// A training pass normalises with the batch statistics and gathers
    /// the moves of the running ones; an eval pass normalises with the
    /// running statistics. Then `after`, fused into the batch norm in
    /// training (and the ReLU in eval).
    fn forward_t(&self, x: &Tensor, pass: Pass, after: After) -> Result<Tensor, ModelError> {
        let Pass::Train(moves) = pass else {
            let (mean, var) = (&self.running_mean, &self.running_var);
            let (w, b) = (&self.weight, &self.bias);
            return Ok(match after {
                After::Nothing => resnet_ops::batch_norm_eval(x, w, b, mean, var, BN_EPS)?,
                After::Relu => resnet_ops::batch_norm_relu_eval(x, w, b, mean, var, BN_EPS)?,
                After::AddRelu(shortcut) => resnet_ops::add_relu(
                    &resnet_ops::batch_norm_eval(x, w, b, mean, var, BN_EPS)?,
                    shortcut,
                )?,
            });
        };
        // Each group (the whole batch without groups) is normalised on its
        // own, one op for all of them; the running statistics move once per
        // step, towards the mean of the groups' means and the mean of their
        // unbiased variances (equal groups weigh the same).
        let images = x.dim(0)?;
        let group = self
            .group
            .filter(|g| g.get() < images)
            .or(NonZeroUsize::new(images))
            .unwrap_or(NonZeroUsize::MIN);
        let bn = resnet_ops::GroupedBatchNorm { group, eps: BN_EPS };
        let (w, b) = (&self.weight, &self.bias);
        let batch = match after {
            After::Nothing => bn.train(x, w, b)?,
            After::Relu => bn.train_relu(x, w, b)?,
            After::AddRelu(shortcut) => bn.train_add_relu(x, w, b, shortcut)?,
        };
        let per_image = x.elem_count() / images.max(1) / self.weight.dim(0)?.max(1);
        let unbiased: Vec<f64> = (0..images)
            .step_by(group.get())
            .map(|start| {
                let n = (group.get().min(images - start) * per_image) as f64;
                n / (n - 1.0).max(1.0)
            })
            .collect();
        // Equal groups share one factor, applied by the update itself (a
        // single group's statistics are its row); a last, smaller group needs
        // one per group (a small copy to the device).
        let (mean, var, factor) = if unbiased.iter().all(|&f| f == unbiased[0]) {
            let rows = |t: &Tensor| match unbiased.len() {
                1 => t.squeeze(0),
                _ => t.mean(0),
            };
            (rows(&batch.mean)?, rows(&batch.var)?, unbiased[0])
        } else {
            let factors: Vec<f32> = unbiased.iter().map(|&f| f as f32).collect();
            let factors = Tensor::from_vec(factors, (unbiased.len(), 1), x.device())?;
            let var = batch.var.broadcast_mul(&factors)?.mean(0)?;
            (batch.mean.mean(0)?, var, 1.0)
        };
        moves.push(&self.running_mean, mean, 1.0);
        moves.push(&self.running_var, var, factor);
        Ok(batch.y)
    }

    fn collect(&self, out: &mut Vec<NamedVar>) {
        push(
            out,
            &self.name,
            "weight",
            &self.weight,
            TensorKind::Parameter,
        );
        push(out, &self.name, "bias", &self.bias, TensorKind::Parameter);
        push(
            out,
            &self.name,
            "running_mean",
            &self.running_mean,
            TensorKind::RunningStat,
        );
        push(
            out,
            &self.name,
            "running_var",
            &self.running_var,
            TensorKind::RunningStat,
        );
    }
}

/// A bias-free conv and the batch norm that follows it.
#[derive(Debug)]
pub(crate) struct ConvBn {
    conv_name: String,
    plan: ConvPlan,
    weight: Var,
    bn: BatchNorm,
    precision: Precision,
}

impl ConvBn {
    /// A conv named `conv_name` followed by a BN named `bn_name`.
    pub(crate) fn new(
        conv_name: String,
        bn_name: String,
        plan: ConvPlan,
        init: &mut Initializer,
    ) -> Result<ConvBn, ModelError> {
        let weight = init.he_normal_fan_out(&[
            plan.out_channels,
            plan.in_channels,
            plan.kernel,
            plan.kernel,
        ])?;
        let bn = BatchNorm::new(bn_name, plan.out_channels, init)?;
        Ok(ConvBn {
            conv_name,
            plan,
            weight,
            bn,
            precision: Precision::Fp32,
        })
    }

    /// conv then BN, then `after`; a traced pass records 3x3 responses
    /// (before the ReLU or the join, so they are not fused into the BN
    /// there) and MACs.
    pub(crate) fn forward_t(
        &self,
        x: &Tensor,
        pass: Pass,
        trace: Option<&mut Trace>,
        after: After,
    ) -> Result<Tensor, ModelError> {
        let (stride, padding) = (self.plan.stride, self.plan.padding);
        let y = self.precision.apply(x, &self.weight, |x, w| {
            resnet_ops::conv2d(x, w, stride, padding)
        })?;
        let Some(trace) = trace else {
            return self.bn.forward_t(&y, pass, after);
        };
        let y = self.bn.forward_t(&y, pass, After::Nothing)?;
        let (_, _, h, w) = y.dims4()?;
        trace.macs += h * w * self.plan.params();
        if self.plan.kernel == 3 {
            trace.responses.push((self.bn.name.clone(), y.clone()));
        }
        Ok(match after {
            After::Nothing => y,
            After::Relu => resnet_ops::relu(&y)?,
            After::AddRelu(shortcut) => resnet_ops::add_relu(&y, shortcut)?,
        })
    }

    /// The conv with the batch norm folded in, as eval mode computes it:
    /// with `scale = bn.weight / sqrt(running_var + eps)`, the conv's
    /// weights times `scale` (per output channel) and a bias
    /// `bn.bias - running_mean * scale`, computed in f64 from the model's
    /// values and rounded once to their dtype (bf16 in bf16 precision), on
    /// the model's device.
    pub(crate) fn fold(&self) -> Result<InferenceConv, ModelError> {
        let wide = |v: &Var| v.as_tensor().detach().to_dtype(DType::F64);
        let bn = &self.bn;
        let scale = (wide(&bn.weight)? / (wide(&bn.running_var)? + BN_EPS)?.sqrt()?)?;
        let shift = (wide(&bn.bias)? - (wide(&bn.running_mean)? * &scale)?)?;
        let o = self.plan.out_channels;
        let dtype = self.precision.operand_dtype(self.weight.dtype());
        let weight = wide(&self.weight)?
            .broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?
            .to_dtype(dtype)?;
        let bias = shift.to_dtype(dtype)?;
        Ok(InferenceConv::new(
            &weight,
            &bias,
            self.plan.stride,
            self.plan.padding,
        )?)
    }

    /// Sets the images per batch-norm group of train mode (None: the whole batch).
    pub(crate) fn set_bn_group(&mut self, group: Option<NonZeroUsize>) {
        self.bn.group = group;
    }

    /// Sets the precision the conv multiplies in.
    pub(crate) fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    pub(crate) fn collect(&self, out: &mut Vec<NamedVar>) {
        push(
            out,
            &self.conv_name,
            "weight",
            &self.weight,
            TensorKind::Parameter,
        );
        self.bn.collect(out);
    }
}

/// The fully connected classifier `fc`.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Var,
    bias: Var,
    /// The precision of the product (the bias is added in f32).
    pub(crate) precision: Precision,
}

impl Linear {
    /// PyTorch's default init: weight and bias uniform in ±1/sqrt(in_features).
    pub(crate) fn new(
        in_features: usize,
        out_features: usize,
        init: &mut Initializer,
    ) -> Result<Linear, ModelError> {
        let bound = 1.0 / (in_features as f64).sqrt();
        Ok(Linear {
            weight: init.uniform(&[out_features, in_features], bound)?,
            bias: init.uniform(&[out_features], bound)?,
            precision: Precision::Fp32,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        trace: Option<&mut Trace>,
    ) -> Result<Tensor, ModelError> {
        if let Some(trace) = trace {
            trace.macs += self.weight.elem_count();
        }
        let product = self
            .precision
            .apply(x, &self.weight.t()?, resnet_ops::matmul)?;
        Ok(product.broadcast_add(&self.bias)?)
    }

    /// The layer as a 1x1 conv of `[N, in_features, 1, 1]` inputs, with
    /// copies of the weight and bias. Run image by image, like every conv,
    /// its output for an image does not depend on the batch (a matrix
    /// product over the batch sums in another order for one row than for
    /// several). In bf16 precision the copies are rounded to bf16.
    pub(crate) fn fold(&self) -> Result<InferenceConv, ModelError> {
        let dtype = self.precision.operand_dtype(self.weight.dtype());
        let copy = |v: &Var| v.as_tensor().detach().to_dtype(dtype)?.copy();
        let (o, c) = self.weight.dims2()?;
        let weight = copy(&self.weight)?.reshape((o, c, 1, 1))?;
        Ok(InferenceConv::new(&weight, &copy(&self.bias)?, 1, 0)?)
    }

    pub(crate) fn collect(&self, out: &mut Vec<NamedVar>) {
        push(out, "fc", "weight", &self.weight, TensorKind::Parameter);
        push(out, "fc", "bias", &self.bias, TensorKind::Parameter);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// With running variances near eps (1e-6 to 1e-4 against eps = 1e-5)
    /// eps changes each channel's scale by up to 3.3x, so a fold that drops
    /// or misplaces it is far off; a correct one differs by rounding.
    #[test]
    fn folding_keeps_eps_where_the_variance_is_near_it() {
        let device = Device::Cpu;
        let plan = ConvPlan {
            in_channels: 4,
            out_channels: 6,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let conv = ConvBn::new(
            "c".into(),
            "b".into(),
            plan,
            &mut Initializer::new(1, &device),
        )
        .unwrap();
        let set = |v: &Var, values: &[f32]| v.set(&Tensor::new(values, &device).unwrap()).unwrap();
        set(&conv.bn.running_var, &[1e-6, 3e-6, 1e-5, 2e-5, 5e-5, 1e-4]);
        set(&conv.bn.running_mean, &[0.1, -0.2, 0.3, 0.0, -0.1, 0.2]);
        set(&conv.bn.weight, &[0.5, 1.5, 1.0, 0.8, 1.2, 0.9]);
        set(&conv.bn.bias, &[0.2, -0.1, 0.0, 0.3, -0.3, 0.1]);
        let x = Tensor::randn(0f32, 1.0, (2, 4, 7, 5), &device).unwrap();
        let want = conv
            .forward_t(&x, Pass::Eval, None, After::Nothing)
            .unwrap();
        let got = conv.fold().unwrap().forward(&x, None, false).unwrap();
        let scale = resnet_test_support::max_abs_diff(&want, &want.zeros_like().unwrap());
        let err = resnet_test_support::max_abs_diff(&got, &want);
        assert!(err <= 1e-5 * scale, "error {err} on outputs up to {scale}");
    }
}
