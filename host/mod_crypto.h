/* bomarun._crypto: digests, base64, key and CSR (libcrypto). */
#ifndef BOMARUN_MOD_CRYPTO_H
#define BOMARUN_MOD_CRYPTO_H

#include <lua.h>

int luaopen_bomarun__crypto(lua_State *L);

#endif
