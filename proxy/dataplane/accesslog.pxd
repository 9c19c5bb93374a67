# Augmenting declarations for Cython (accesslog.py stays plain Python).
cimport cython
from proxy.dataplane.exchange cimport Exchange
from proxy.dataplane.pool cimport Pool
from proxy.dataplane.request cimport Request
from proxy.dataplane.upstream cimport Upstream

cdef class AccessLog:
    cdef public object sink, _log
    cdef public list _pending

    @cython.locals(req=Request, pool=Pool, target=Upstream, pending=list)
    cpdef record_exchange(self, Exchange exchange, int status, double now, error)
