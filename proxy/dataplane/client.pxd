from proxy.dataplane.reading cimport RequestReader

cdef class ClientConnection(RequestReader):
    pass
