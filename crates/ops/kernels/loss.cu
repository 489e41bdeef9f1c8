// The cross-entropy loss of f32 logits [n, k] against u32 labels, with the
// targets smoothed by eps, and its gradient; src/cross_entropy.rs has the
// CPU twins, whose order of operations these follow value for value (the
// round-to-nearest intrinsics keep nvcc from fusing multiply-adds; expf and
// logf may differ from the CPU's in the last bit). A label of k or more
// makes its row NaN.

// Row r's largest logit and the sum of exp(z - max), in index order.
__device__ void row_stats(const float *z, unsigned int k, float *max, float *sum_exp) {
    float m = -INFINITY;
    for (unsigned int j = 0; j < k; ++j) m = fmaxf(m, z[j]);
    float s = 0.0f;
    for (unsigned int j = 0; j < k; ++j) s = __fadd_rn(s, expf(__fsub_rn(z[j], m)));
    *max = m;
    *sum_exp = s;
}

// loss_r = max + log(sum_exp) - (1 - eps) z[label] - eps * (sum_j z_j) / k.
__device__ float row_loss(const float *z, unsigned int label, unsigned int k, float eps) {
    if (label >= k) return NAN;
    float m, s;
    row_stats(z, k, &m, &s);
    float total = 0.0f;
    for (unsigned int j = 0; j < k; ++j) total = __fadd_rn(total, z[j]);
    const float lse = __fadd_rn(m, logf(s));
    return __fsub_rn(__fsub_rn(lse, __fmul_rn(__fsub_rn(1.0f, eps), z[label])),
                     __fmul_rn(eps, __fdiv_rn(total, (float)k)));
}

// The mean loss, in one block: each thread writes the losses of rows
// threadIdx.x, threadIdx.x + blockDim.x, ... into `rows` (n values), then
// thread 0 sums them in row order into loss[0].
extern "C" __global__ void cross_entropy_f32(const float *logits, const unsigned int *labels,
                                             float *rows, float *loss, unsigned int n,
                                             unsigned int k, float eps) {
    for (unsigned int r = threadIdx.x; r < n; r += blockDim.x) {
        rows[r] = row_loss(logits + (unsigned long long)r * k, labels[r], k, eps);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (unsigned int r = 0; r < n; ++r) total = __fadd_rn(total, rows[r]);
        loss[0] = __fdiv_rn(total, (float)n);
    }
}

// The logits' gradient, one thread per row:
// dz_j = (exp(z_j - max) / sum_exp - target_j) * (dloss / n), target_j =
// (1 - eps if j is the label, else 0) + eps / k.
extern "C" __global__ void cross_entropy_grad_f32(const float *logits,
                                                  const unsigned int *labels,
                                                  const float *dloss, float *dlogits,
                                                  unsigned int n, unsigned int k, float eps) {
    const unsigned int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const float *z = logits + (unsigned long long)r * k;
    float *g = dlogits + (unsigned long long)r * k;
    const unsigned int label = labels[r];
    const float scale = __fdiv_rn(dloss[0], (float)n);
    const float uniform = __fdiv_rn(eps, (float)k);
    float m, s;
    row_stats(z, k, &m, &s);
    for (unsigned int j = 0; j < k; ++j) {
        const float p = __fdiv_rn(expf(__fsub_rn(z[j], m)), s);
        const float target = __fadd_rn(j == label ? __fsub_rn(1.0f, eps) : 0.0f, uniform);
        g[j] = label < k ? __fmul_rn(__fsub_rn(p, target), scale) : NAN;
    }
}
