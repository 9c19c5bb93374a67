# Augmenting declarations for Cython (sink.py stays plain Python).  The calls an
# upstream connection makes on its exchange, and an exchange on its client, for
# every request: declared here so they go through a C method table.

cdef class ResponseSink:
    cpdef wanted(self)
    cpdef attached(self, conn)
    cpdef detached(self, conn)
    cpdef send_upstream(self, transport, bytes payload)
    cpdef on_upstream_head(self, conn, int status, list head, bint sized)
    cpdef on_upstream_body(self, bytes data)
    cpdef on_upstream_done(self)
    cpdef pass_on(self)

cdef class Client:
    cdef public object transport, current, peer, peer_bytes
    cdef public bint trusted, paused_writing

    cpdef answered(self, exchange, double now)
