#!/usr/bin/env python3
"""make_seeds.py - writes the seed corpora of the fuzz targets whose inputs
are records or requests framed by the target itself (fuzz_http_request,
fuzz_group_records, fuzz_proj_catalog): valid ones, as the server writes
and reads them, and a few near misses. Run from the repository root:
python3 tests/fuzz/make_seeds.py. The files it writes are committed."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_str(num, s):
    s = s.encode() if isinstance(s, str) else s
    return varint(num << 3 | 2) + varint(len(s)) + s


def field_int(num, v):
    return varint(num << 3) + varint(v)


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_http_request: 3 bytes (method, url, flags), then
# method\0url\0authorization\0prefix\0after\0limit

def http(m, u, f, method="", url="", authz="", prefix="", after="", limit=""):
    return bytes([m, u, f]) + b"\0".join(
        s.encode() for s in (method, url, authz, prefix, after, limit))


H = "fuzz_http_request"
write(H, "metrics", http(0, 0, 0))
write(H, "admin_page", http(0, 1, 0))
write(H, "summary", http(0, 2, 0))
write(H, "streams", http(0, 3, 0))
write(H, "streams_prefix_limit", http(0, 3, 1 | 4, prefix="p-", limit="2"))
write(H, "streams_after", http(0, 3, 1 | 2 | 4, prefix="p-", after="p-014", limit="5"))
write(H, "streams_bad_limit", http(0, 3, 4, limit="0"))
write(H, "streams_limit_junk", http(0, 3, 4, limit="10x"))
write(H, "projections", http(0, 4, 0))
write(H, "groups", http(0, 5, 0))
write(H, "head_index", http(1, 6, 0))
write(H, "post", http(2, 0, 0))
write(H, "other_method", http(3, 2, 0, method="DELETE"))
write(H, "not_found", http(0, 7, 0, url="/api/nothing"))
write(H, "auth_admin", http(0, 2, 8 | 16))
write(H, "auth_other", http(0, 0, 8 | 32))
write(H, "auth_none", http(0, 3, 8))
write(H, "auth_header", http(0, 5, 8 | 48, authz="Bearer admin-token"))
write(H, "auth_bad_header", http(0, 4, 8 | 48, authz="Basic b3BzOnB3"))

# ---- fuzz_group_records: records [table][klen][vlen][key][value];
# state: 5 native u64 (checkpoint, delivered, acked, redelivered, parked);
# marks: key name\0 be64 position, value native {u64 pos, u32 attempts,
# u32 flags} (1 settled, 2 replay)


def rec(table, key, val):
    key = key.encode() if isinstance(key, str) else key
    return bytes([table, len(key), len(val)]) + key + val


def group_def(name, stream="", prefixes=(), types=(), maxd=0, ack=0, ordered=False):
    d = field_str(1, name)
    if stream:
        d += field_str(2, stream)
    if prefixes or types:
        flt = b"".join(field_str(1, p) for p in prefixes) + \
            b"".join(field_str(2, t) for t in types)
        d += field_str(3, flt)
    if maxd:
        d += field_int(6, maxd)
    if ack:
        d += field_int(7, ack)
    if ordered:
        d += field_int(8, 1)
    return d


def state(ck, delivered=0, acked=0, redelivered=0, parked=0):
    return struct.pack("<5Q", ck, delivered, acked, redelivered, parked)


def mark(name, pos, attempts, flags, vpos=None):
    key = name.encode() + b"\0" + struct.pack(">Q", pos)
    return key, struct.pack("<QII", pos if vpos is None else vpos, attempts, flags)


G = "fuzz_group_records"
write(G, "one_group", rec(0, "g1", group_def("g1")) + rec(1, "g1", state(2, 3, 2)))
write(G, "marks",
      rec(0, "g1", group_def("g1", maxd=3, ack=1000)) + rec(1, "g1", state(2, 5, 3, 2, 1)) +
      rec(2, *mark("g1", 3, 1, 1)) + rec(2, *mark("g1", 4, 2, 0)) +
      rec(2, *mark("g1", 1, 0, 2)))
write(G, "ordered_replay",
      rec(0, "ord", group_def("ord", ordered=True)) + rec(1, "ord", state(3)) +
      rec(2, *mark("ord", 1, 1, 2)) + rec(2, *mark("ord", 3, 1, 2)))
write(G, "two_groups",
      rec(0, "a", group_def("a", stream="order-1")) +
      rec(0, "b", group_def("b", prefixes=("order-", "$parked-"), types=("Created",))) +
      rec(1, "a", state(1)) + rec(1, "b", state(0)) + rec(2, *mark("b", 2, 4, 1)))
write(G, "bad_state_size", rec(0, "g1", group_def("g1")) + rec(1, "g1", state(2)[:39]))
write(G, "bad_mark_size",
      rec(0, "g1", group_def("g1")) + rec(2, *mark("g1", 3, 1, 1)) +
      rec(2, b"g1\0\0\0\0\0\0\0\0\4\1", struct.pack("<QII", 4, 0, 0)))
write(G, "bad_mark_flags", rec(0, "g1", group_def("g1")) + rec(2, *mark("g1", 3, 1, 7)))
write(G, "replay_above", rec(0, "g1", group_def("g1")) + rec(1, "g1", state(1)) +
      rec(2, *mark("g1", 3, 1, 2)))
write(G, "def_other_name", rec(0, "g1", group_def("g2")))
write(G, "def_bad_name", rec(0, "G!", group_def("G!")))
write(G, "def_not_pb", rec(0, "g1", b"\xff\xff\xff"))

# ---- fuzz_proj_catalog: entries [klen][vlen][key][value], value:
# be64 current generation, be64 rebuild generation, the definition


def ent(key, cur, nxt, d):
    key = key.encode()
    val = struct.pack(">QQ", cur, nxt) + d
    return bytes([len(key), len(val)]) + key + val


def proj_def(name, kind, key="", sum_="", latest=False, prefixes=()):
    d = field_str(1, name) + field_int(2, kind)
    if prefixes:
        d += field_str(3, b"".join(field_str(1, p) for p in prefixes))
    if key:
        d += field_str(4, key)
    if sum_:
        d += field_str(5, sum_)
    if latest:
        d += field_int(6, 1)
    return d


P = "fuzz_proj_catalog"
write(P, "one", ent("state", 1, 0, proj_def("state", 1)))
write(P, "four",
      ent("state", 1, 0, proj_def("state", 1, prefixes=("order-",))) +
      ent("counts", 2, 0, proj_def("counts", 2, key="$type", sum_="/n")) +
      ent("idx", 1, 0, proj_def("idx", 3, key="/k")) +
      ent("names", 3, 0, proj_def("names", 4, latest=True)))
write(P, "rebuilding", ent("counts", 1, 2, proj_def("counts", 2, key="$stream")))
write(P, "same_gens", ent("state", 1, 1, proj_def("state", 1)))
write(P, "gen_zero", ent("state", 0, 0, proj_def("state", 1)))
write(P, "other_name", ent("state", 1, 0, proj_def("other", 1)))
write(P, "short", bytes([5, 3]) + b"state" + b"\0\0\1")
write(P, "invalid_def", ent("idx", 1, 0, proj_def("idx", 3)))
