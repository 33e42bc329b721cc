"""
The attribute encodings against every value a user can give the one file
of theirs hlfs reports on: their lock file, whose times, size and owner
they choose (C{touch -d}, C{truncate}).  No sockets: the encoder alone.
"""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hlfs.core.linkfs import REG, Attr
from hlfs.nfs.attrs import AttrEncoder

NS = 10**9
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT32 = st.integers(0, 2**32 - 1)


def lock_attr(mtime=0, ctime=0, size=0, uid=0, gid=0, mode=0o600):
    return Attr(REG, mode, 1, uid, gid, size, (3 << 61) | 12345, mtime, ctime)


def times3(data):
    fields = struct.unpack(">5I2Q2I2Q6I", data)
    return fields[11:13], fields[13:15], fields[15:17]


@settings(max_examples=500, deadline=None)
@given(mtime=INT64, ctime=INT64, size=st.integers(0, 2**63 - 1), uid=UINT32, gid=UINT32,
       mode=st.integers(0, 0o7777))
def test_every_lock_stat_encodes(mtime, ctime, size, uid, gid, mode):
    """
    If a lock file has any times, size, owner or mode its owner can give
    it, then its v2 and v3 attributes and wcc data encode, at their fixed
    sizes, with each time within NFS's range.
    """
    enc = AttrEncoder(0x12345678)
    a = lock_attr(mtime, ctime, size, uid, gid, mode)
    assert len(enc.fattr3(a)) == 84
    assert len(enc.fattr2(a)) == 68
    assert len(enc.wcc(a)) == 4 + 24 + 4 + 84
    _, (msec, mnsec), (csec, cnsec) = times3(enc.fattr3(a))
    for ns, (sec, nsec) in ((mtime, (msec, mnsec)), (ctime, (csec, cnsec))):
        assert nsec < NS
        if 0 <= ns < 2**32 * NS:
            assert sec * NS + nsec == ns
        else:
            assert (sec, nsec) == ((0, 0) if ns < 0 else (2**32 - 1, NS - 1))


def test_times_clamped_not_wrapped():
    """
    A time before 1970 is the Epoch, one after 2106 the last second, in
    both versions; a v2 size past 4 GiB is the largest v2 can say, not the
    size modulo 4 GiB.
    """
    enc = AttrEncoder(1)
    before = lock_attr(mtime=-315_619_200 * NS, ctime=-1)
    after = lock_attr(mtime=7_258_118_400 * NS, ctime=2**32 * NS)
    assert times3(enc.fattr3(before))[1:] == ((0, 0), (0, 0))
    assert times3(enc.fattr3(after))[1:] == ((2**32 - 1, NS - 1),) * 2
    v2 = struct.unpack(">17I", enc.fattr2(after))
    assert v2[13:17] == (2**32 - 1, 999_999, 2**32 - 1, 999_999)
    assert struct.unpack(">17I", enc.fattr2(lock_attr(size=5 * 2**30)))[5] == 2**32 - 1
