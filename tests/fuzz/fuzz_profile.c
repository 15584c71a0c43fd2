/* fuzz_profile: lua/engine/bomarun/profile.lua's load of arbitrary text as a
 * profile file (in its sandbox, bounded in time), then the --set overrides
 * and the needs check.
 * The driver is tests/fuzz/profile.lua. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init("profile");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
