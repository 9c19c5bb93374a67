# Augmenting declarations for Cython (request.py stays plain Python).
cdef class Request:
    cdef public object method, target, version, headers, body, body_file, error
    cdef public object host, cookie, override, request_id, payload, fields, xff
    cdef public bint keep_alive, expect_continue, connection, framed, upgrade, keyed
    cdef public Py_ssize_t body_size
    cdef public double started
    cdef public int tries

