cdef class Outbox:
    cdef public object loop
    cdef public list _queued

    cpdef send(self, transport, bytes data)
