# Augmenting declarations for Cython (request.py stays plain Python).
cdef dict _LOWER_NAMES

cdef class Request:
    cdef public bytes method, target, payload
    cdef public str version
    cdef public list headers, fields
    cdef public tuple xff
    cdef public object body, body_file, error, host, cookie, override, request_id
    cdef public bint keep_alive, expect_continue, connection, framed, upgrade, keyed
    cdef public Py_ssize_t body_size
    cdef public double started
    cdef public int tries

    cpdef inspect(self, plane, frozenset drop)
    cpdef _check_start_line(self)
    cpdef _host(self, host)
