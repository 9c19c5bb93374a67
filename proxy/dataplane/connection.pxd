cimport cython
from proxy.dataplane.response cimport ResponseReader
from proxy.dataplane.sink cimport ResponseSink

cdef class UpstreamConnection(ResponseReader):

    cpdef start(self, ResponseSink exchange, bytes payload, bint is_head, body_file,
                double now)
    cpdef _detach(self)
    @cython.locals(exchange=ResponseSink)
    cpdef _complete(self, bint keep_alive)
