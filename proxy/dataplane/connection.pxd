from proxy.dataplane.response cimport ResponseReader

cdef class UpstreamConnection(ResponseReader):

    cpdef _detach(self)
    cpdef _complete(self, bint keep_alive)
