/*
 * libcurand.so.10 for machines whose CUDA libraries lack cuRAND (PyTorch's
 * CUDA 13 wheels do not ship it): the cuRAND host API entry points that
 * candle uses, with the numbers drawn on the host and copied to the device on
 * the generator's stream. scripts/build-cuda.sh builds it into
 * target/cuda/dist/lib; scripts/gpu-check.sh puts it on the library path only
 * where no real libcurand.so.10 is found.
 *
 * candle creates a generator for every CUDA device it opens; this project
 * draws its random numbers (initialisation, augmentation) on the CPU, so the
 * generation functions are there for completeness, not speed. The sequences
 * differ from cuRAND's: xoshiro256** seeded by splitmix64, uniform in (0, 1],
 * normal by Box-Muller. Every other cuRAND function is absent.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <cuda.h>
#include <curand.h>

struct curandGenerator_st {
    uint64_t seed, offset, s[4];
    CUstream stream;
};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void reseed(curandGenerator_t g) {
    uint64_t x = g->seed ^ (g->offset * 0xd1b54a32d192ed03ULL);
    for (int i = 0; i < 4; i++) g->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next(curandGenerator_t g) {
    uint64_t *s = g->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in (0, 1]. */
static double uniform(curandGenerator_t g) { return ((next(g) >> 11) + 1) * 0x1.0p-53; }

/* A standard normal pair by Box-Muller. */
static void normal_pair(curandGenerator_t g, double *a, double *b) {
    double r = sqrt(-2.0 * log(uniform(g))), t = 2.0 * M_PI * uniform(g);
    *a = r * cos(t), *b = r * sin(t);
}

/* Copies `bytes` from `host` to `device` on the generator's stream and waits. */
static curandStatus_t upload(curandGenerator_t g, void *device, const void *host, size_t bytes) {
    if (cuMemcpyHtoDAsync((CUdeviceptr)device, host, bytes, g->stream) != CUDA_SUCCESS ||
        cuStreamSynchronize(g->stream) != CUDA_SUCCESS)
        return CURAND_STATUS_LAUNCH_FAILURE;
    return CURAND_STATUS_SUCCESS;
}

curandStatus_t curandCreateGenerator(curandGenerator_t *generator, curandRngType_t rng_type) {
    (void)rng_type;
    curandGenerator_t g = calloc(1, sizeof *g);
    if (!g) return CURAND_STATUS_ALLOCATION_FAILED;
    reseed(g);
    *generator = g;
    return CURAND_STATUS_SUCCESS;
}

curandStatus_t curandDestroyGenerator(curandGenerator_t generator) {
    free(generator);
    return CURAND_STATUS_SUCCESS;
}

curandStatus_t curandGetVersion(int *version) {
    *version = 10000;
    return CURAND_STATUS_SUCCESS;
}

curandStatus_t curandSetStream(curandGenerator_t generator, cudaStream_t stream) {
    generator->stream = (CUstream)stream;
    return CURAND_STATUS_SUCCESS;
}

curandStatus_t curandSetPseudoRandomGeneratorSeed(curandGenerator_t generator,
                                                  unsigned long long seed) {
    generator->seed = seed;
    reseed(generator);
    return CURAND_STATUS_SUCCESS;
}

curandStatus_t curandSetGeneratorOffset(curandGenerator_t generator, unsigned long long offset) {
    generator->offset = offset;
    reseed(generator);
    return CURAND_STATUS_SUCCESS;
}

/* Draws `n` values of `kind` (0 uniform, 1 normal, 2 log-normal) as float
 * (`is_double` 0) or double into device memory `out`. */
static curandStatus_t generate(curandGenerator_t g, void *out, size_t n, int kind, int is_double,
                               double mean, double stddev) {
    size_t size = is_double ? sizeof(double) : sizeof(float);
    void *host = malloc(n * size + 1);
    if (!host) return CURAND_STATUS_ALLOCATION_FAILED;
    for (size_t i = 0; i < n; i += 2) {
        double v[2];
        if (kind == 0) {
            v[0] = uniform(g), v[1] = uniform(g);
        } else {
            normal_pair(g, &v[0], &v[1]);
            for (int j = 0; j < 2; j++) {
                v[j] = mean + stddev * v[j];
                if (kind == 2) v[j] = exp(v[j]);
            }
        }
        for (size_t j = 0; j < 2 && i + j < n; j++) {
            if (is_double)
                ((double *)host)[i + j] = v[j];
            else
                ((float *)host)[i + j] = (float)v[j];
        }
    }
    curandStatus_t status = upload(g, out, host, n * size);
    free(host);
    return status;
}

curandStatus_t curandGenerateUniform(curandGenerator_t g, float *out, size_t num) {
    return generate(g, out, num, 0, 0, 0.0, 1.0);
}

curandStatus_t curandGenerateUniformDouble(curandGenerator_t g, double *out, size_t num) {
    return generate(g, out, num, 0, 1, 0.0, 1.0);
}

curandStatus_t curandGenerateNormal(curandGenerator_t g, float *out, size_t n, float mean,
                                    float stddev) {
    return generate(g, out, n, 1, 0, mean, stddev);
}

curandStatus_t curandGenerateNormalDouble(curandGenerator_t g, double *out, size_t n, double mean,
                                          double stddev) {
    return generate(g, out, n, 1, 1, mean, stddev);
}

curandStatus_t curandGenerateLogNormal(curandGenerator_t g, float *out, size_t n, float mean,
                                       float stddev) {
    return generate(g, out, n, 2, 0, mean, stddev);
}

curandStatus_t curandGenerateLogNormalDouble(curandGenerator_t g, double *out, size_t n,
                                             double mean, double stddev) {
    return generate(g, out, n, 2, 1, mean, stddev);
}
