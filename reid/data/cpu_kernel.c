/* BatchAugment's CPU path in one pass: shifted crop with zero padding, horizontal flip,
 * uint8 -> float32, ImageNet normalisation and random erasing, each output value written once.
 *
 * Output pixel (y, x) of sample i, channel c, with (sy, sx) = (sy[i], sx[i]):
 *   erased (inside box[i])           -> 0
 *   source pixel outside the image   -> bias[c]                  (black padding, normalised)
 *   otherwise                        -> (float)v * scale[c] + bias[c]
 * where v = src[rows[i], c, y + sy, x + sx]          when flip[i] == 0,
 *       v = src[rows[i], c, y + sy, W - 1 - x + sx]  when flip[i] == 1.
 *
 * The product and the sum are rounded to float32 separately, exactly like PyTorch's
 * `out.copy_(u8).mul_(scale).add_(bias)`; the loader compiles this file with
 * -ffp-contract=off so that the compiler cannot fuse them into one multiply-add.
 * Strides are in elements; a source row with stride 1 (NCHW) takes the vectorised loops.
 */
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
#define REID_CLONES __attribute__((target_clones("avx2", "default")))  /* AVX2 where the CPU has it */
#else
#define REID_CLONES
#endif

#if defined(__GNUC__)
#define REID_INLINE static inline __attribute__((always_inline))  /* inlined into each clone, vectorised there */
#else
#define REID_INLINE static inline
#endif

REID_INLINE void fill(float *o, int64_t n, float v)
{
    for (int64_t k = 0; k < n; ++k) o[k] = v;
}

REID_INLINE int64_t clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

REID_INLINE void write_row(float *o, const uint8_t *p, int64_t sw, int64_t W, int64_t sx, int flip, float s, float b)
{
    int64_t lo, hi;  /* output columns whose source column lies inside the image */
    if (!flip) { lo = clamp(-sx, 0, W); hi = clamp(W - sx, lo, W); }
    else       { lo = clamp(sx, 0, W);  hi = clamp(W + sx, lo, W); }
    fill(o, lo, b);
    if (!flip && sw == 1) {
        const uint8_t *q = p + sx;
        for (int64_t x = lo; x < hi; ++x) o[x] = (float)q[x] * s + b;
    } else if (flip && sw == 1) {
        const uint8_t *q = p + (W - 1 + sx);
        for (int64_t x = lo; x < hi; ++x) o[x] = (float)q[-x] * s + b;
    } else {
        for (int64_t x = lo; x < hi; ++x) o[x] = (float)p[(flip ? W - 1 - x + sx : x + sx) * sw] * s + b;
    }
    fill(o + hi, W - hi, b);
}

REID_CLONES
void reid_augment(const uint8_t *src, int64_t sn, int64_t sc, int64_t sh, int64_t sw, int64_t H, int64_t W,
                  const int64_t *rows, const int64_t *sy, const int64_t *sx, const uint8_t *flip,
                  const int64_t *box, const float *scale, const float *bias, float *out, int64_t B)
{
    for (int64_t i = 0; i < B; ++i) {
        /* the erased box (y, x, h, w), clipped to the image; h = 0 when the sample is not erased */
        const int64_t ey0 = clamp(box[4 * i], 0, H), ey1 = clamp(box[4 * i] + box[4 * i + 2], ey0, H);
        const int64_t ex0 = clamp(box[4 * i + 1], 0, W), ex1 = clamp(box[4 * i + 1] + box[4 * i + 3], ex0, W);
        for (int64_t c = 0; c < 3; ++c) {
            const uint8_t *plane = src + rows[i] * sn + c * sc;
            for (int64_t y = 0; y < H; ++y) {
                float *o = out + ((i * 3 + c) * H + y) * W;
                const int64_t ys = y + sy[i];
                if (ys < 0 || ys >= H)
                    fill(o, W, bias[c]);
                else
                    write_row(o, plane + ys * sh, sw, W, sx[i], flip[i], scale[c], bias[c]);
                if (y >= ey0 && y < ey1)
                    memset(o + ex0, 0, (size_t)(ex1 - ex0) * sizeof(float));
            }
        }
    }
}
