/* fuzz_opts.c - sanitizer run-time defaults linked into every fuzz target
 * and replay driver, so a bare `./fuzz_header` behaves as documented without
 * exporting UBSAN_OPTIONS (an explicit UBSAN_OPTIONS still overrides these).
 *
 * The fuzz build compiles unsigned-integer-overflow checks recoverable
 * (CMakeLists.txt); halt_on_error makes every report fatal anyway, except
 * the intended wraps listed with their reasons in tests/fuzz/ubsan.supp.
 * In builds without UBSan this function is simply never called.
 */
#ifndef D9_FUZZ_UBSAN_SUPP
#define D9_FUZZ_UBSAN_SUPP "tests/fuzz/ubsan.supp"
#endif

const char *__ubsan_default_options(void);

const char *__ubsan_default_options(void) {
  return "halt_on_error=1:print_stacktrace=1:suppressions=" D9_FUZZ_UBSAN_SUPP;
}
