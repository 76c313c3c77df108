/*
 * classify.c: classify raw frames with the vimvq C API.
 *
 *   classify [--memory] MODEL.vimvq rgb24|i420 WIDTH HEIGHT FILE...
 *
 * Each FILE holds one raw frame (e.g. `ffmpeg -i photo.png -f rawvideo -pix_fmt rgb24 photo.rgb`).
 * Prints one line per file: `FILE<TAB>CLASS<TAB>LABEL<TAB>PROB` (the top-1 class). --memory
 * loads the model file into a malloc'd buffer and opens it with vimvq_open_memory.
 *
 * Build: gcc -O2 -Iinclude examples/classify.c ../../target/release/libvimvq_capi.a \
 *            -lpthread -ldl -lm -o classify
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vimvq.h"

static int fail(const char *what, int code) {
    fprintf(stderr, "error: %s: %s (%s)\n", what, vimvq_strerror(code), vimvq_last_error());
    return 1;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc(n > 0 ? (size_t)n : 1);
            if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            }
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    int arg = 1, memory = 0;
    if (arg < argc && strcmp(argv[arg], "--memory") == 0) {
        memory = 1;
        arg++;
    }
    if (argc - arg < 5) {
        fprintf(stderr, "usage: %s [--memory] MODEL.vimvq rgb24|i420 WIDTH HEIGHT FILE...\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[arg];
    int format = strcmp(argv[arg + 1], "i420") == 0 ? VIMVQ_FORMAT_I420 : VIMVQ_FORMAT_RGB24;
    uint32_t w = (uint32_t)strtoul(argv[arg + 2], NULL, 10);
    uint32_t h = (uint32_t)strtoul(argv[arg + 3], NULL, 10);

    vimvq_model *model = NULL;
    int rc;
    if (memory) {
        size_t len = 0;
        unsigned char *bytes = read_file(model_path, &len);
        if (!bytes) {
            fprintf(stderr, "error: cannot read %s\n", model_path);
            return 1;
        }
        rc = vimvq_open_memory(bytes, len, &model);
        free(bytes); /* the library keeps its own aligned copy */
    } else {
        rc = vimvq_open(model_path, &model);
    }
    if (rc != VIMVQ_OK) return fail(model_path, rc);

    vimvq_info info;
    if ((rc = vimvq_model_info(model, &info)) != VIMVQ_OK) return fail("info", rc);
    size_t frame_len = vimvq_frame_bytes(w, h, format);
    size_t scratch_len = vimvq_scratch_bytes(model, w, h, format);
    if (frame_len == 0 || scratch_len == 0) {
        fprintf(stderr, "error: %ux%u: %s\n", w, h, vimvq_last_error());
        vimvq_close(model);
        return 1;
    }
    void *scratch = malloc(scratch_len);
    float *logits = malloc(sizeof(float) * info.num_classes);
    int status = 0;
    for (int i = arg + 4; i < argc && scratch && logits; i++) {
        size_t len = 0;
        unsigned char *frame = read_file(argv[i], &len);
        if (!frame) {
            fprintf(stderr, "error: cannot read %s\n", argv[i]);
            status = 1;
            continue;
        }
        vimvq_top top[1];
        rc = vimvq_classify(model, frame, len, w, h, format, scratch, scratch_len, logits,
                            info.num_classes, top, 1);
        free(frame);
        if (rc != VIMVQ_OK) {
            fail(argv[i], rc);
            status = 1;
            continue;
        }
        const char *label = vimvq_label(model, top[0].class_index);
        printf("%s\t%u\t%s\t%.6f\n", argv[i], top[0].class_index, label ? label : "-", top[0].prob);
    }
    free(logits);
    free(scratch);
    vimvq_close(model);
    return status;
}
