/* fuzz_runbook: arbitrary text loaded as a runbook file the way cli.lua
 * loads one (in a sandbox), then the runbook's plan built and printed; no
 * body runs.
 * The driver is tests/fuzz/runbook.lua. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init("runbook");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
