# Augmenting declarations for Cython (exchange.py stays plain Python).
cimport cython
from proxy.dataplane.dispatch cimport dispatch
from proxy.dataplane.request cimport Request
from proxy.dataplane.plane cimport DataPlane
from proxy.dataplane.pool cimport Pool
from proxy.dataplane.sink cimport Client, ResponseSink
from proxy.dataplane.upstream cimport Upstream

cdef class Exchange(ResponseSink):
    cdef public DataPlane plane
    cdef public Client client
    cdef public Pool pool
    cdef public Upstream target
    cdef public object phase, conn, connecting
    cdef public list out
    cdef public Request request
    cdef public bint set_cookie, chunked, keep_alive
    cdef public int status
    cdef public Py_ssize_t sent_bytes

    cpdef start(self)
    cpdef _go(self)
    @cython.locals(pool=Pool, up=Upstream)
    cpdef _forward(self)
    cpdef _dispatch(self, Upstream up, bint fresh=*)
    cpdef _finish(self, int status, bint counted=*)
    # ResponseSink
    cpdef wanted(self)
    cpdef attached(self, conn)
    cpdef detached(self, conn)
    cpdef send_upstream(self, transport, bytes payload)
    cpdef on_upstream_head(self, conn, int status, list head, bint sized)
    cpdef on_upstream_body(self, bytes data)
    cpdef on_upstream_done(self)
    cpdef pass_on(self)
