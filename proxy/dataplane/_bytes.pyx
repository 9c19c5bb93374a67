# cython: language_level=3, boundscheck=False, wraparound=False
"""Two bytes operations of every request, in C: the compiled twins of
`b"".join` and of the request id's `%`-format, which they must match (tests
compare them).  The pure build uses the originals (writes.py, forwarding.py).

bytes.join takes a buffer of each part (PyObject_GetBuffer and
PyBuffer_Release), ~130 instructions a part; a request head forwarded is
about fifteen parts, and the response to it as many again.  The parts here
are bytes objects, whose size and contents are read directly; anything else
in the list goes to bytes.join.  A `%`-format parses its format string each
time: ~800 instructions for a request id.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.string cimport memcpy


cdef extern from "Python.h":
    bytes PyBytes_FromStringAndSize(const char* data, Py_ssize_t size)
    const Py_ssize_t PY_SSIZE_T_MAX


def join(list parts) -> bytes:
    cdef Py_ssize_t count = len(parts), size = 0, at = 0, i, length
    cdef bytes out
    cdef char* into
    for i in range(count):
        part = parts[i]
        if not PyBytes_CheckExact(part):
            return b"".join(parts)
        length = PyBytes_GET_SIZE(part)
        if length > PY_SSIZE_T_MAX - size:
            raise OverflowError("join() result is too long")
        size += length
    if count == 1:
        return parts[0]  # as bytes.join returns a lone bytes object itself
    # No Python code runs between the two loops, so the list is as measured.
    out = PyBytes_FromStringAndSize(NULL, size)
    into = PyBytes_AS_STRING(out)
    for i in range(count):
        part = parts[i]
        length = PyBytes_GET_SIZE(part)
        memcpy(into + at, PyBytes_AS_STRING(part), length)
        at += length
    return out


def request_id(bytes prefix not None, unsigned long long number) -> bytes:
    """b"%s-%x" % (prefix, number), made in one allocation."""
    cdef char digits[17]
    cdef int start = 17
    cdef Py_ssize_t size = PyBytes_GET_SIZE(prefix)
    cdef bytes out
    cdef char* into
    while True:
        start -= 1
        digits[start] = b"0123456789abcdef"[number & 15]
        number >>= 4
        if number == 0:
            break
    start -= 1
    digits[start] = b"-"
    out = PyBytes_FromStringAndSize(NULL, size + 17 - start)
    into = PyBytes_AS_STRING(out)
    memcpy(into, PyBytes_AS_STRING(prefix), size)
    memcpy(into + size, digits + start, 17 - start)
    return out
