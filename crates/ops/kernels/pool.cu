// The 3x3, stride-2, padding-1 max pool of resnet-ops on NVIDIA GPUs, f32,
// contiguous NCHW: `planes` planes of h x w inputs and ho x wo outputs,
// ho = (h - 1) / 2 + 1. src/pool/max.rs launches these kernels and holds the
// CPU versions, which they match exactly.
//
// Each output's window maximum is the first in row-major order, a NaN
// counting as the maximum; its gradient goes to that position.

// The offset in its plane of the first maximum of output (oy, ox)'s window.
__device__ unsigned int window_arg_max(const float *plane, unsigned int h, unsigned int w,
                                       unsigned int oy, unsigned int ox) {
    const unsigned int y0 = oy > 0 ? 2 * oy - 1 : 0, x0 = ox > 0 ? 2 * ox - 1 : 0;
    const unsigned int y1 = min(2 * oy + 2, h), x1 = min(2 * ox + 2, w);
    unsigned int best_at = y0 * w + x0;
    float best = plane[best_at];
    for (unsigned int y = y0; y < y1; ++y) {
        for (unsigned int x = x0; x < x1; ++x) {
            const unsigned int at = y * w + x;
            const float v = plane[at];
            if (v > best || isnan(v)) {
                best = v;
                best_at = at;
            }
        }
    }
    return best_at;
}

// One thread per output value: y = the maximum of its window.
extern "C" __global__ void max_pool_3x3_s2_f32(const float *x, float *y, unsigned int h,
                                               unsigned int w, unsigned int ho,
                                               unsigned int wo, unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned int plane = i / (ho * wo), r = i % (ho * wo);
    const float *in = x + (size_t)plane * h * w;
    y[i] = in[window_arg_max(in, h, w, r / wo, r % wo)];
}

// One thread per input value: dx = the sum of the output gradients whose
// window maximum it is, in row-major order of the outputs (the order in
// which the CPU kernel adds them).
extern "C" __global__ void max_pool_3x3_s2_grad_f32(const float *x, const float *dy, float *dx,
                                                    unsigned int h, unsigned int w,
                                                    unsigned int ho, unsigned int wo,
                                                    unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned int plane = i / (h * w), at = i % (h * w);
    const unsigned int iy = at / w, ix = at % w;
    const float *in = x + (size_t)plane * h * w;
    const float *grad = dy + (size_t)plane * ho * wo;
    // The outputs whose windows hold row iy: 2 oy - 1 <= iy <= 2 oy + 1.
    const unsigned int oy1 = min((iy + 1) / 2, ho - 1), ox1 = min((ix + 1) / 2, wo - 1);
    float sum = 0.0f;
    for (unsigned int oy = iy / 2; oy <= oy1; ++oy) {
        for (unsigned int ox = ix / 2; ox <= ox1; ++ox) {
            if (window_arg_max(in, h, w, oy, ox) == at) {
                sum += grad[oy * wo + ox];
            }
        }
    }
    dx[i] = sum;
}

// The paper's option-A shortcut (src/pool/shortcut.rs holds the CPU
// version): x is n x c x h x w, y is n x co x ho x wo with
// co = c + pad_before + pad_after, ho = ceil(h / stride), wo likewise.
// One thread per output value: channel k of y is channel k - pad_before of
// x, subsampled, or zero.
extern "C" __global__ void pad_subsample_f32(const float *x, float *y, unsigned int c,
                                             unsigned int h, unsigned int w, unsigned int co,
                                             unsigned int ho, unsigned int wo,
                                             unsigned int pad_before, unsigned int stride,
                                             unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned int plane = i / (ho * wo), r = i % (ho * wo);
    const unsigned int image = plane / co, k = plane % co;
    if (k < pad_before || k - pad_before >= c) {
        y[i] = 0.0f;
        return;
    }
    const size_t from = ((size_t)image * c + (k - pad_before)) * h * w;
    y[i] = x[from + (size_t)(r / wo) * stride * w + (size_t)(r % wo) * stride];
}

// Its input gradient, one thread per input value: the output gradient of a
// kept position, zero at the others.
extern "C" __global__ void pad_subsample_grad_f32(const float *dy, float *dx, unsigned int c,
                                                  unsigned int h, unsigned int w,
                                                  unsigned int co, unsigned int ho,
                                                  unsigned int wo, unsigned int pad_before,
                                                  unsigned int stride, unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned int plane = i / (h * w), at = i % (h * w);
    const unsigned int iy = at / w, ix = at % w;
    if (iy % stride != 0 || ix % stride != 0) {
        dx[i] = 0.0f;
        return;
    }
    const unsigned int image = plane / c, k = plane % c;
    const size_t to = ((size_t)image * co + k + pad_before) * ho * wo;
    dx[i] = dy[to + (size_t)(iy / stride) * wo + ix / stride];
}

// Global average pooling (src/pool/average.rs holds the CPU version), one
// thread per plane of len values: their sum in order, divided by len.
extern "C" __global__ void global_avg_pool_f32(const float *x, float *y, unsigned int len,
                                               unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float *plane = x + (size_t)i * len;
    float sum = 0.0f;
    for (unsigned int k = 0; k < len; ++k) sum += plane[k];
    y[i] = sum / (float)len;
}

// Its input gradient, one thread per input value: the plane's gradient
// divided by len.
extern "C" __global__ void global_avg_pool_grad_f32(const float *dy, float *dx,
                                                    unsigned int len, unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dx[i] = dy[i / len] / (float)len;
}
