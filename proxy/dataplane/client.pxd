from proxy.dataplane.exchange cimport Exchange
from proxy.dataplane.reading cimport RequestReader
from proxy.dataplane.request cimport Request

cdef class ClientConnection(RequestReader):
    cpdef _start(self, Request req)
    cpdef answered(self, exchange, double now)
