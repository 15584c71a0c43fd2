/* fuzz_journal: lua/engine/bomarun/journal.lua's read of an events.jsonl
 * holding arbitrary bytes, then report.build and the three renderings, as
 * `bomarun report RUN_DIR` does.
 * The driver is tests/fuzz/journal.lua. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init("journal");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
