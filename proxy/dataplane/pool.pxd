from proxy.dataplane.stats cimport Histogram

cdef class Pool:
    cdef public object name, upstreams, balance, by_class
    cdef public Histogram latency
    cdef public Py_ssize_t _next, drain_cut

    cpdef pick(self, exclude=*)
