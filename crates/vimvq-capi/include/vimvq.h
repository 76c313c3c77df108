/*
 * vimvq.h: C API of the vimvq runtime (Vision Mamba classifiers, vector-quantized .vimvq models).
 *
 * Link with the static library (target/<triple>/release/libvimvq_capi.a, plus -lpthread -ldl -lm)
 * or the shared one (libvimvq_capi.so). Built by `cargo build --release -p vimvq-capi`.
 *
 * Contract:
 *  - Every function checks its pointer arguments and catches internal panics; failures return a
 *    status code (VIMVQ_E_*) and record a message for vimvq_last_error() (per thread).
 *  - A vimvq_model is immutable once opened: several threads may call vimvq_classify on the same
 *    handle at once, each with its own scratch buffer.
 *  - vimvq_classify performs no heap allocation; it works in the caller's scratch buffer, sized
 *    by vimvq_scratch_bytes() for a frame size and format. The buffer needs no alignment.
 *  - vimvq_open memory-maps the file (do not modify the file while the model is open).
 *    vimvq_open_memory copies the bytes into an internal 64-byte-aligned buffer: the caller's
 *    buffer needs no alignment and may be freed as soon as the call returns.
 *
 * Frames: RGB24 = W*H*3 bytes, interleaved R,G,B, rows top to bottom, no padding.
 *         I420  = Y plane (W*H), then U and V planes (ceil(W/2)*ceil(H/2) each), no padding;
 *                 converted with BT.601 limited range (see crates/vimvq-rt/src/frame.rs).
 * Any frame size works: the model's stored preprocessing (resize shorter side, centre crop,
 * normalise; grayscale models take PIL luma) is applied, exactly as `vimvq run` does on images.
 */
#ifndef VIMVQ_H
#define VIMVQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define VIMVQ_OK 0
#define VIMVQ_E_NULL 1   /* a required pointer argument is NULL */
#define VIMVQ_E_IO 2     /* the model file cannot be opened or read */
#define VIMVQ_E_FORMAT 3 /* not a valid .vimvq model */
#define VIMVQ_E_ARG 4    /* bad frame size / format / frame length / k */
#define VIMVQ_E_BUFFER 5 /* scratch or logits buffer too small */
#define VIMVQ_E_INFER 6  /* inference failed */
#define VIMVQ_E_PANIC 7  /* internal error: a panic was caught */

/* Pixel formats. */
#define VIMVQ_FORMAT_RGB24 0
#define VIMVQ_FORMAT_I420 1
#define VIMVQ_FORMAT_GRAY8 2 /* one 8-bit luma sample per pixel, W*H bytes */

typedef struct vimvq_model vimvq_model;

typedef struct vimvq_top {
    uint32_t class_index;
    float prob; /* softmax probability */
} vimvq_top;

typedef struct vimvq_info {
    uint32_t num_classes;
    uint32_t channels; /* 1 or 3 */
    uint32_t img_size; /* network input side */
    uint32_t resize;   /* shorter side after resizing */
    uint32_t crop;     /* centre crop side */
    uint64_t file_bytes;
    uint64_t infer_scratch_bytes; /* network alone; vimvq_scratch_bytes() adds the rest */
} vimvq_info;

/* Opens and validates a .vimvq file (memory-mapped). *out = handle, or NULL on failure. */
int vimvq_open(const char *path, vimvq_model **out);
/* Same from len bytes at data (copied; data needs no alignment and may be freed after). */
int vimvq_open_memory(const void *data, size_t len, vimvq_model **out);
/* Frees a handle. NULL is a no-op. */
void vimvq_close(vimvq_model *model);

int vimvq_model_info(const vimvq_model *model, vimvq_info *out);
/* Class name, or NULL if the model has no labels; lives as long as the handle. */
const char *vimvq_label(const vimvq_model *model, uint32_t index);

/* Bytes of one frame: W*H*3 (RGB24) or W*H + 2*ceil(W/2)*ceil(H/2) (I420); 0 if invalid. */
size_t vimvq_frame_bytes(uint32_t width, uint32_t height, int format);
/* Scratch bytes vimvq_classify needs for width x height frames in format; 0 on error. */
size_t vimvq_scratch_bytes(const vimvq_model *model, uint32_t width, uint32_t height, int format);

/*
 * Classifies one frame. frame_len must equal vimvq_frame_bytes(width, height, format);
 * scratch_len >= vimvq_scratch_bytes(...). Writes all logits if logits != NULL (logits_len >=
 * num_classes) and the k most probable classes, best first (ties: lower index), if top != NULL
 * (k >= 1; clamped to num_classes). At least one of logits / top must be non-NULL.
 */
int vimvq_classify(const vimvq_model *model, const uint8_t *frame, size_t frame_len,
                   uint32_t width, uint32_t height, int format, void *scratch,
                   size_t scratch_len, float *logits, size_t logits_len, vimvq_top *top,
                   size_t k);

/* Floats vimvq_features writes (the model's embedding width); 0 for a NULL handle. */
size_t vimvq_feature_dim(const vimvq_model *model);
/*
 * Writes one frame's pooled feature vector (what the classifier head reads: embed_dim floats,
 * the normalised class token) into features (features_len >= vimvq_feature_dim(model)). Same frame, size,
 * format and scratch rules as vimvq_classify; logits = features . head^T + bias.
 */
int vimvq_features(const vimvq_model *model, const uint8_t *frame, size_t frame_len,
                   uint32_t width, uint32_t height, int format, void *scratch,
                   size_t scratch_len, float *features, size_t features_len);

/* Static text for a status code. */
const char *vimvq_strerror(int code);
/* Detailed message of the last failed call on this thread ("" if none); valid until the next
 * failing call on this thread. */
const char *vimvq_last_error(void);
/* Library version string. */
const char *vimvq_version(void);

#ifdef __cplusplus
}
#endif
#endif /* VIMVQ_H */
