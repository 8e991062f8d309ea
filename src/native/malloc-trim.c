// glibc's malloc_trim(0) for the heap trimmer (src/observability/heap-trim.ts), as a Node-API
// addon: the only way to reach it from JavaScript.
//
// Why: glibc returns freed memory at the top of its heap by itself (MALLOC_TRIM_THRESHOLD_), but
// not the free pages between chunks still in use. A router process settled 40 s after a sync held
// 2.4 to 7.5 MiB of such pages (RSS 99.0 -> 91.6 MiB when gdb called malloc_trim(0) in it); V8's
// compiler zones and the socket reads of the sync leave them. malloc_trim(0) hands every whole free
// page back with madvise(MADV_DONTNEED); it takes well under a millisecond on these heaps.
//
// Built by scripts/build-native.mjs against the headers of the Node.js the project pins.
#define NAPI_VERSION 8
#include <malloc.h>
#include <node_api.h>

static napi_value Trim (napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  // 1 when memory was given back, 0 when there was none to give.
  if (napi_get_boolean(env, malloc_trim(0) == 1, &result) != napi_ok) return NULL;
  return result;
}

static napi_value Init (napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "trim", NAPI_AUTO_LENGTH, Trim, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "trim", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE_INIT () {
  return Init(env, exports);
}
