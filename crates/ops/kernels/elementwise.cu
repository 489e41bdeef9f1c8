// Element-wise f32 kernels of resnet-ops for NVIDIA GPUs: the ReLU, the
// residual join, the ReLU gradient, the SGD update, and batch norm's running
// statistics.
// build.rs compiles this file to PTX with nvcc when the `cuda` feature is on;
// src/cuda.rs launches the kernels.
//
// The arithmetic goes through the round-to-nearest intrinsics (__fadd_rn,
// __fmul_rn, __fsub_rn), which nvcc never contracts into a fused
// multiply-add: each value is then rounded exactly as the CPU kernels round
// it, and the GPU's results equal the CPU's bit for bit.
//
// Every kernel but the multi-tensor ones (sgd_f32, running_stats_f32, copy_f32) takes its
// element count `n` last and runs one thread per element.

#define INDEX_OR_RETURN                                    \
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; \
    if (i >= n) return;

// y = max(x, 0)
extern "C" __global__ void relu_f32(const float *x, float *y, unsigned int n) {
    INDEX_OR_RETURN
    y[i] = fmaxf(x[i], 0.0f);
}

// y = max(a + b, 0): the join of a residual block.
extern "C" __global__ void add_relu_f32(const float *a, const float *b, float *y,
                                        unsigned int n) {
    INDEX_OR_RETURN
    y[i] = fmaxf(__fadd_rn(a[i], b[i]), 0.0f);
}

// dx = dy where the ReLU's output y > 0, else 0.
extern "C" __global__ void relu_grad_f32(const float *dy, const float *y, float *dx,
                                         unsigned int n) {
    INDEX_OR_RETURN
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// The SGD step of many tensors in one launch, in place, one block per chunk
// of one tensor's values: row blockIdx.x of `table` holds the addresses of
// the chunk's first weight, momentum and gradient value, then its length.
// v = momentum * v + (grad + weight_decay * w), then w = w - lr * v.
extern "C" __global__ void sgd_f32(const unsigned long long *table, float momentum,
                                   float weight_decay, float lr) {
    const unsigned long long *row = table + 4 * (unsigned long long)blockIdx.x;
    float *w = (float *)row[0];
    float *v = (float *)row[1];
    const float *grad = (const float *)row[2];
    const unsigned int n = (unsigned int)row[3];
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        const float g = __fadd_rn(grad[i], __fmul_rn(w[i], weight_decay));
        const float velocity = __fadd_rn(__fmul_rn(v[i], momentum), g);
        v[i] = velocity;
        w[i] = __fsub_rn(w[i], __fmul_rn(velocity, lr));
    }
}

// Many tensors set to new values in one launch, one block per chunk of one
// tensor's values: row blockIdx.x of `table` holds the addresses of the
// chunk's first value in the tensor and in its new values, then its length.
extern "C" __global__ void copy_f32(const unsigned long long *table) {
    const unsigned long long *row = table + 3 * (unsigned long long)blockIdx.x;
    float *dst = (float *)row[0];
    const float *src = (const float *)row[1];
    const unsigned int n = (unsigned int)row[2];
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

// Batch norms' running statistics in one launch, in place, one block per
// chunk of one statistic's values: row blockIdx.x of `table` holds the
// addresses of the chunk's first running and batch value, its length, then
// the statistic's scale as f32 bits (1 for a mean, n / (n - 1) for a
// variance). r = keep * r + momentum * (scale * batch), keep = 1 - momentum.
extern "C" __global__ void running_stats_f32(const unsigned long long *table, float keep,
                                             float momentum) {
    const unsigned long long *row = table + 4 * (unsigned long long)blockIdx.x;
    float *r = (float *)row[0];
    const float *batch = (const float *)row[1];
    const unsigned int n = (unsigned int)row[2];
    const float scale = __uint_as_float((unsigned int)row[3]);
    for (unsigned int i = threadIdx.x; i < n; i += blockDim.x) {
        r[i] = __fadd_rn(__fmul_rn(r[i], keep), __fmul_rn(__fmul_rn(batch[i], scale), momentum));
    }
}

// A training batch norm's moments from the statistics cuDNN saved, `saved`
// = [mean; inv_std] (c values each) for each of n / (2c) groups of images:
// out = [the groups' means; their variances 1 / inv_std^2 - eps], eps passed
// as its f32 bits.
extern "C" __global__ void saved_moments_f32(const float *saved, float *out, unsigned int c,
                                             unsigned int eps_bits, unsigned int n) {
    INDEX_OR_RETURN
    const unsigned int half = n / 2;
    const unsigned int j = i < half ? i : i - half;
    const unsigned int at = (j / c) * 2 * c + j % c;
    if (i < half) {
        out[i] = saved[at];
    } else {
        const float s = saved[at + c];
        out[i] = __fsub_rn(__frcp_rn(__fmul_rn(s, s)), __uint_as_float(eps_bits));
    }
}

// Eval-mode batch norm: y = x * scale[c] + shift[c], and max(y, 0) if relu,
// over NCHW values, c = (i / plane) % channels.
extern "C" __global__ void channel_affine_f32(const float *x, const float *scale,
                                              const float *shift, float *y, unsigned int plane,
                                              unsigned int channels, unsigned int relu,
                                              unsigned int n) {
    INDEX_OR_RETURN
    const unsigned int c = (i / plane) % channels;
    const float v = __fadd_rn(__fmul_rn(x[i], scale[c]), shift[c]);
    y[i] = relu ? fmaxf(v, 0.0f) : v;
}
