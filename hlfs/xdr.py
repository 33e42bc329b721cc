"""
XDR (RFC 4506) on precompiled C{struct} formats.

Decoding walks a buffer with an L{Unpacker}; encoding appends to a
L{Packer}.  Both know only XDR's primitive types: the RPC and NFS modules
compose them, and hot paths use the module-level C{struct.Struct} objects
directly.  Every malformed input raises L{XDRError}, never anything else.
"""

import struct

UINT = struct.Struct(">I")
INT = struct.Struct(">i")
UHYPER = struct.Struct(">Q")
HYPER = struct.Struct(">q")
UINT2 = struct.Struct(">II")

_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class XDRError(ValueError):
    """
    The bytes are not a valid XDR encoding of what was expected.
    """


def padding(length):
    """
    Return the zero bytes that follow C{length} bytes of opaque data.
    """
    return _PAD[length & 3]


def pack_opaque(data):
    """
    Encode variable-length opaque data (also XDR strings, as bytes).
    """
    return UINT.pack(len(data)) + data + _PAD[len(data) & 3]


class Unpacker:
    """
    A cursor over an XDR-encoded buffer.

    @ivar data: the buffer (C{bytes} or C{memoryview}).
    @ivar pos: the offset of the next unread byte.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data, pos=0):
        self.data = data
        self.pos = pos

    def uint(self):
        try:
            (value,) = UINT.unpack_from(self.data, self.pos)
        except struct.error:
            raise XDRError(f"truncated at offset {self.pos}: expected uint") from None
        self.pos += 4
        return value

    def int(self):
        try:
            (value,) = INT.unpack_from(self.data, self.pos)
        except struct.error:
            raise XDRError(f"truncated at offset {self.pos}: expected int") from None
        self.pos += 4
        return value

    def uhyper(self):
        try:
            (value,) = UHYPER.unpack_from(self.data, self.pos)
        except struct.error:
            raise XDRError(f"truncated at offset {self.pos}: expected hyper") from None
        self.pos += 8
        return value

    def bool(self):
        value = self.uint()
        if value > 1:
            raise XDRError(f"invalid bool {value} at offset {self.pos - 4}")
        return value == 1

    def fixed(self, length):
        """
        Decode fixed-length opaque data of C{length} bytes.
        """
        end = self.pos + length
        if end > len(self.data):
            raise XDRError(f"truncated at offset {self.pos}: expected {length} bytes")
        value = bytes(self.data[self.pos : end])
        self.pos = end + (-length & 3)
        if self.pos > len(self.data):
            raise XDRError("truncated padding")
        return value

    def opaque(self, maxlen=0xFFFFFFFF):
        """
        Decode variable-length opaque data (or a string) of at most
        C{maxlen} bytes.
        """
        length = self.uint()
        if length > maxlen:
            raise XDRError(f"length {length} exceeds the maximum {maxlen}")
        return self.fixed(length)

    def skip(self, length):
        """
        Skip C{length} bytes of already-aligned data.
        """
        end = self.pos + length
        if end > len(self.data):
            raise XDRError(f"truncated at offset {self.pos}: expected {length} bytes")
        self.pos = end

    def remaining(self):
        return len(self.data) - self.pos


class Packer:
    """
    Accumulates XDR-encoded parts; L{getvalue} joins them once.
    """

    __slots__ = ("parts",)

    def __init__(self):
        self.parts = []

    def uint(self, value):
        self.parts.append(UINT.pack(value))

    def int(self, value):
        self.parts.append(INT.pack(value))

    def uhyper(self, value):
        self.parts.append(UHYPER.pack(value))

    def bool(self, value):
        self.parts.append(UINT.pack(1 if value else 0))

    def fixed(self, data):
        self.parts.append(data)
        if len(data) & 3:
            self.parts.append(_PAD[len(data) & 3])

    def opaque(self, data):
        self.parts.append(pack_opaque(data))

    def raw(self, data):
        """
        Append bytes that are already XDR-encoded.
        """
        self.parts.append(data)

    def getvalue(self):
        return b"".join(self.parts)
