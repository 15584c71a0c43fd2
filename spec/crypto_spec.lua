-- bomarun._crypto (libcrypto): digests, streaming hashers, files hashed on
-- the thread pool, base64, and a key with its CSR; checked against the
-- openssl and coreutils tools as the independent peers.
local crypto = require "bomarun._crypto"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local util = require "support.util"

describe("crypto", function()
  it("digests strings as sha256sum does (FIPS 180 test vector)", function()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", crypto.digest("sha256", "abc"))
    local data = string.rep("\0\255bomarun", 1000)
    local r = assert(proc.run{argv = {"sha512sum"}, stdin = data})
    assert.equal(r.stdout:match("^(%x+)"), crypto.digest("sha512", data))
    assert.has_error(function() crypto.digest("nope", "x") end)
  end)

  it("hashes a stream piece by piece to the same digest, and closes", function()
    local h = crypto.hasher("sha512")
    for k = 1, 100 do h:update(tostring(k)) end
    local whole = {}
    for k = 1, 100 do whole[k] = tostring(k) end
    assert.equal(crypto.digest("sha512", table.concat(whole)), h:hex())
    assert.has_error(function() h:update("more") end)
    do local c <close> = crypto.hasher("sha256") c:update("x") end
  end)

  it("hashes a file on the thread pool while other tasks run", function()
    local d = util.tmpdir(finally)
    local path = d .. "/blob"
    assert(proc.run{argv = {"dd", "if=/dev/urandom", "of=" .. path, "bs=1M", "count=48", "status=none"}})
    local ticks = 0
    local ticker = task.spawn(function() while true do task.sleep(0.001) ticks = ticks + 1 end end)
    local hex = assert(crypto.digest_file("sha512", path))
    ticker:cancel()
    local r = assert(proc.run{argv = {"sha512sum", path}})
    assert.equal(r.stdout:match("^(%x+)"), hex)
    assert.is_true(ticks > 0, "the loop was blocked while hashing")
    local v, err, code = crypto.digest_file("sha256", d .. "/missing")
    assert.is_nil(v)
    assert.equal("LOCAL_FILE", code)
    assert.matches("missing: No such file", err, 1, true)
  end)

  it("drops a cancelled file hash and serves the next one", function()
    local d = util.tmpdir(finally)
    local path = d .. "/blob"
    assert(proc.run{argv = {"dd", "if=/dev/zero", "of=" .. path, "bs=1M", "count=64", "status=none"}})
    local t = task.spawn(function() return crypto.digest_file("sha512", path) end)
    task.yield()
    t:cancel()
    assert.is_false((t:wait()))
    assert.equal(crypto.digest("sha256", ""), crypto.digest_file("sha256", "/dev/null"))
  end)

  it("round-trips binary data through base64 and refuses what is not base64", function()
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    local bin = table.concat(all)
    for n = 0, 5 do
      local s = bin:sub(1, #bin - n)
      assert.equal(s, crypto.b64decode(crypto.b64encode(s)))
    end
    local r = assert(proc.run{argv = {"base64", "-w0"}, stdin = bin})
    assert.equal(r.stdout, crypto.b64encode(bin))
    assert.equal("hello", crypto.b64decode("aGVs\nbG8="))
    local v, _, code = crypto.b64decode("abc")
    assert.is_nil(v)
    assert.equal("INVALID", code)
  end)

  it("makes an RSA key and a CSR that openssl verifies, with the subject asked for", function()
    local key, csr = crypto.key_and_csr(2048, {{"CN", "admin"}, {"O", "system:masters"}})
    assert.matches("^%-%-%-%-%-BEGIN PRIVATE KEY%-%-%-%-%-", key)
    local d = util.tmpdir(finally)
    util.write(d .. "/csr.pem", csr)
    local r = assert(proc.run{argv = {"openssl", "req", "-in", d .. "/csr.pem", "-noout", "-verify", "-subject"}})
    assert.equal(0, r.code, r.stderr)
    assert.matches("CN%s*=%s*admin", r.stdout)
    assert.matches("O%s*=%s*system:masters", r.stdout)
    assert.has_error(function() crypto.key_and_csr(512, {}) end)
  end)
end)
