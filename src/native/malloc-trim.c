// glibc's malloc_trim(0) for the heap trimmer (src/observability/heap-trim.ts), as a Node-API
// addon: the only way to reach it from JavaScript.
//
// Why: glibc returns freed memory at the top of its heap by itself (MALLOC_TRIM_THRESHOLD_), but
// not the free pages between chunks still in use. A router process settled 40 s after a sync held
// 2.4 to 7.5 MiB of such pages (RSS 99.0 -> 91.6 MiB when gdb called malloc_trim(0) in it); V8's
// compiler zones and the socket reads of the sync leave them. malloc_trim(0) hands every whole free
// page back with madvise(MADV_DONTNEED); it takes well under a millisecond on these heaps.
//
// It also exports pageOut(start, length), madvise(MADV_PAGEOUT) for the executable's start-up
// pages (src/observability/page-out.ts says why); the same addon, so one build and one load.
//
// Built by scripts/build-native.mjs against the headers of the Node.js the project pins.
#define NAPI_VERSION 8
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/mman.h>
#include <node_api.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21 // Linux 5.4; glibc's headers name it from 2.30 on
#endif

static napi_value Trim (napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  // 1 when memory was given back, 0 when there was none to give.
  if (napi_get_boolean(env, malloc_trim(0) == 1, &result) != napi_ok) return NULL;
  return result;
}

// pageOut(start, length): madvise(start, length, MADV_PAGEOUT) on a page-aligned range of this
// process's own mappings; returns 0, or the errno (EINVAL from a kernel older than 5.4). Numbers
// carry the addresses exactly: x86-64 and arm64 user addresses stay below 2^53.
static napi_value PageOut (napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double start = 0, length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return NULL;
  if (napi_get_value_double(env, argv[0], &start) != napi_ok) return NULL;
  if (napi_get_value_double(env, argv[1], &length) != napi_ok) return NULL;
  int rc = madvise((void *)(uintptr_t)start, (size_t)length, MADV_PAGEOUT);
  napi_value result;
  if (napi_create_int32(env, rc == 0 ? 0 : errno, &result) != napi_ok) return NULL;
  return result;
}

static napi_value Init (napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "trim", NAPI_AUTO_LENGTH, Trim, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "trim", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "pageOut", NAPI_AUTO_LENGTH, PageOut, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "pageOut", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE_INIT () {
  return Init(env, exports);
}
