/* fuzz_common: one Lua state running the bomarun library, shared by the
 * libFuzzer harnesses (tests/fuzz/fuzz_*.c).
 *
 * Each harness names a driver, tests/fuzz/<name>.lua, which returns a
 * function(data, path): `data` is the input, `path` a file holding it.  The
 * driver runs as the host's main task (so task.timeout works) on a state
 * set up by runtime_open, exactly as the binary sets up its own.  The
 * driver decides what is a bug: it calls fuzz_bug(message), or lets an
 * error escape, and the harness aborts, which libFuzzer reports as a crash
 * and saves the input.  Errors the driver catches are the expected answer
 * to bad input. */
#ifndef BOMARUN_FUZZ_COMMON_H
#define BOMARUN_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Set up the state and load tests/fuzz/<name>.lua (aborts on failure). */
void fuzz_init(const char *name);
/* Run the driver on one input. */
void fuzz_one(const uint8_t *data, size_t size);

#endif
