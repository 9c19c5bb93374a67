# cython: language_level=3, boundscheck=False, wraparound=False
"""The JSON access lines of a batch, formatted in C: the compiled twin of
accesslog._render_lines, which it must match byte for byte (a test compares
them on the same lines).

Formatting a line through Python's f-string, float formatting and
json.encoder cost ~12k instructions, a sixth of a proxied request; written
into one growing C buffer it costs a small part of that.  Where no C compiler
is, accesslog.py keeps its Python renderer (like aiohttp's _helpers.pyx).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcpy, strlen


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    char* PyOS_double_to_string(double value, char format_code, int precision, int flags,
                                int* type) except NULL


cdef extern from "<float.h>":
    int LDBL_MANT_DIG


cdef extern from "<math.h>":
    long double floorl(long double value)
    int signbit(double value)


cdef struct Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(Buffer* out, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity
    cdef char* grown
    if out.size + extra <= out.capacity:
        return 0
    capacity = max(out.capacity * 2, out.size + extra + 256)
    grown = <char*>PyMem_Realloc(out.data, capacity)
    if grown == NULL:
        raise MemoryError()
    out.data = grown
    out.capacity = capacity
    return 0


cdef int _put(Buffer* out, const char* text, Py_ssize_t size) except -1:
    _reserve(out, size)
    memcpy(out.data + out.size, text, size)
    out.size += size
    return 0


cdef int _lit(Buffer* out, bytes text) except -1:
    return _put(out, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))


cdef int _put_fixed3(Buffer* out, double value) except -1:
    """`value` as f"{value:.3f}" formats it.  Times and durations (0 to 10^15) are
    rounded here, exactly: in a long double of 64 bits or more, value * 1000 is
    exact (53 bits times 125, a power of two aside), so its fraction decides
    the rounding as dtoa's would, ties to even.  Anything else goes through
    Python's own conversion, which costs ~800 instructions a number."""
    cdef long double scaled, whole
    cdef unsigned long long thousandths
    cdef char* digits
    if LDBL_MANT_DIG >= 64 and 0.0 <= value < 1e15 and not signbit(value):
        scaled = <long double>value * <long double>1000.0
        whole = floorl(scaled)
        thousandths = <unsigned long long>whole
        if scaled - whole > 0.5 or (scaled - whole == 0.5 and thousandths & 1):
            thousandths += 1
        _put_int(out, <long long>(thousandths // 1000))
        _reserve(out, 4)
        out.data[out.size] = b'.'
        out.data[out.size + 1] = <char>(48 + thousandths // 100 % 10)
        out.data[out.size + 2] = <char>(48 + thousandths // 10 % 10)
        out.data[out.size + 3] = <char>(48 + thousandths % 10)
        out.size += 4
        return 0
    digits = PyOS_double_to_string(value, b'f', 3, 0, NULL)
    try:
        _put(out, digits, strlen(digits))
    finally:
        PyMem_Free(digits)
    return 0


cdef int _put_int(Buffer* out, long long value) except -1:
    cdef char digits[24]
    cdef int start = 24
    cdef unsigned long long rest = -value if value < 0 else value
    while True:
        start -= 1
        digits[start] = <char>(48 + rest % 10)
        rest //= 10
        if rest == 0:
            break
    if value < 0:
        start -= 1
        digits[start] = b'-'
    return _put(out, digits + start, 24 - start)


cdef const char* _HEX = "0123456789abcdef"


cdef int _put_escaped(Buffer* out, const unsigned char* text, Py_ssize_t size,
                      bint latin1) except -1:
    """A JSON string literal, quotes included, escaped as json.encoder's
    encode_basestring does.  `latin1`: the bytes are Latin-1 (a request's path
    or id, decoded so in Python), else UTF-8 already."""
    cdef Py_ssize_t i
    cdef unsigned char c
    _reserve(out, size * 6 + 2)  # the longest escape, \u00XX, is 6 bytes
    cdef char* p = out.data + out.size
    p[0] = b'"'
    p += 1
    for i in range(size):
        c = text[i]
        if c == b'"' or c == b'\\':
            p[0] = b'\\'
            p[1] = c
            p += 2
        elif c < 0x20:
            p[0] = b'\\'
            if c == b'\n':
                p[1] = b'n'
                p += 2
            elif c == b'\r':
                p[1] = b'r'
                p += 2
            elif c == b'\t':
                p[1] = b't'
                p += 2
            elif c == 0x08:
                p[1] = b'b'
                p += 2
            elif c == 0x0c:
                p[1] = b'f'
                p += 2
            else:
                p[1] = b'u'
                p[2] = b'0'
                p[3] = b'0'
                p[4] = _HEX[c >> 4]
                p[5] = _HEX[c & 15]
                p += 6
        elif c >= 0x80 and latin1:  # U+0080..U+00FF in UTF-8
            p[0] = <char>(0xc0 | (c >> 6))
            p[1] = <char>(0x80 | (c & 0x3f))
            p += 2
        else:
            p[0] = <char>c
            p += 1
    p[0] = b'"'
    p += 1
    out.size = p - out.data
    return 0


cdef int _put_name(Buffer* out, object value) except -1:
    """A method, pool, upstream or error name: bytes, str or None (null)."""
    cdef Py_ssize_t size
    cdef const char* text
    if value is None:
        return _lit(out, b"null")
    if isinstance(value, bytes):
        return _put_escaped(out, <const unsigned char*>PyBytes_AS_STRING(value),
                            PyBytes_GET_SIZE(value), True)
    text = PyUnicode_AsUTF8AndSize(value, &size)
    return _put_escaped(out, <const unsigned char*>text, size, False)


cdef int _put_line(Buffer* out, tuple line) except -1:
    cdef Py_ssize_t size
    cdef const char* text
    ts, method, path, status, pool, upstream, duration, sent, rid, client, error = line
    _lit(out, b'{"event":"request","timestamp":')
    _put_fixed3(out, ts)
    _lit(out, b',"method":')
    _put_name(out, method)
    _lit(out, b',"path":')
    _put_name(out, path)
    _lit(out, b',"status":')
    _put_int(out, status)
    _lit(out, b',"pool":')
    _put_name(out, pool)
    _lit(out, b',"upstream":')
    _put_name(out, upstream)
    _lit(out, b',"duration_ms":')
    _put_fixed3(out, <double>duration * 1000)
    _lit(out, b',"bytes":')
    _put_int(out, sent)
    _lit(out, b',"request_id":')
    _put_name(out, rid)
    _lit(out, b',"client":"')
    text = PyUnicode_AsUTF8AndSize(client, &size)  # an address: inserted as is, as in Python
    _put(out, text, size)
    if error is None:
        _lit(out, b'"}')
    else:
        _lit(out, b'","error":')
        _put_name(out, error)
        _lit(out, b'}')
    return 0


def render_lines(list lines) -> str:
    """The access lines (accesslog.AccessLog's tuples) as JSON, one per line."""
    cdef Buffer out
    cdef Py_ssize_t i
    out.data = <char*>PyMem_Malloc(4096)
    if out.data == NULL:
        raise MemoryError()
    out.size = 0
    out.capacity = 4096
    try:
        for i in range(len(lines)):
            if i:
                _lit(&out, b"\n")
            _put_line(&out, lines[i])
        return PyUnicode_DecodeUTF8(out.data, out.size, NULL)
    finally:
        PyMem_Free(out.data)
