//! What an inference convolution does to each output plane right after
//! writing it, while the plane is still in cache: add the output channel's
//! bias (a folded batch norm's shift), add the residual (a block's shortcut),
//! apply the ReLU. Three passes over the whole output, each reading and
//! writing all of it, become one pass over values already in cache.

/// `y = max(y + bias[o] + residual, 0)` (each part optional but the bias)
/// for every value `y` of output channel `o`. The sums are taken in that
/// order, `(y + bias) + residual`, on every path.
#[derive(Debug, Clone, Copy)]
pub(super) struct Epilogue<'a> {
    /// One value per output channel.
    pub(super) bias: &'a [f32],
    /// Values of the output's shape (`[N, O, Ho, Wo]`) to add, if any.
    pub(super) residual: Option<&'a [f32]>,
    /// Whether a ReLU follows.
    pub(super) relu: bool,
}

impl Epilogue<'_> {
    /// Applies the epilogue to `y`, output plane `plane` of the batch
    /// (`image * O + o`), in place.
    pub(super) fn apply_plane(&self, plane: usize, y: &mut [f32]) {
        let b = self.bias[plane % self.bias.len()];
        let residual = self
            .residual
            .map(|r| &r[plane * y.len()..(plane + 1) * y.len()]);
        // One loop per combination, so that each vectorises.
        match (residual, self.relu) {
            (None, false) => y.iter_mut().for_each(|v| *v += b),
            (None, true) => y.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
            (Some(r), false) => y.iter_mut().zip(r).for_each(|(v, r)| *v = *v + b + r),
            (Some(r), true) => y
                .iter_mut()
                .zip(r)
                .for_each(|(v, r)| *v = (*v + b + r).max(0.0)),
        }
    }

    /// Applies the epilogue to the output planes `y` (`plane_len` values
    /// each), the first of which is plane `first` of the batch.
    pub(super) fn apply(&self, first: usize, y: &mut [f32], plane_len: usize) {
        for (i, plane) in y.chunks_mut(plane_len).enumerate() {
            self.apply_plane(first + i, plane);
        }
    }
}
