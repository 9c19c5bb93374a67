from proxy.dataplane.request cimport Request

cdef class Forwarding:
    cdef public object tester_header, _drop, _drop_trusted, _trusted_nets, _tester_nets
    cdef public bytes _id_prefix
    cdef public unsigned long long _last_id

    cpdef drop_set(self, bint trusted)
    cpdef render(self, Request req, bytes peer, bint trusted)
