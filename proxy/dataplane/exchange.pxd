# Augmenting declarations for Cython (exchange.py stays plain Python).
from proxy.dataplane.request cimport Request
from proxy.dataplane.plane cimport DataPlane
from proxy.dataplane.pool cimport Pool
from proxy.dataplane.upstream cimport Upstream

cdef class Exchange:
    cdef public DataPlane plane
    cdef public Pool pool
    cdef public Upstream target
    cdef public object client, phase, conn, connecting, out
    cdef public Request request
    cdef public bint set_cookie, chunked, keep_alive
    cdef public int status
    cdef public Py_ssize_t sent_bytes

    cpdef start(self)
    cpdef _go(self)
    cpdef _forward(self)
    cpdef _dispatch(self, Upstream up, bint fresh=*)
    cpdef pass_on(self)
