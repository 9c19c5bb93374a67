cimport cython
from proxy.dataplane.stats cimport Histogram
from proxy.dataplane.upstream cimport Upstream

cdef class Pool:
    cdef public object name, upstreams, balance
    cdef public list by_class
    cdef public Histogram latency
    cdef public Py_ssize_t _next, drain_cut

    @cython.locals(up=Upstream, best=Upstream, n=Py_ssize_t, i=Py_ssize_t, start=Py_ssize_t)
    cpdef pick(self, exclude=*)
    cpdef count(self, status, duration=*)
