# Augmenting declarations for Cython (response.py stays plain Python).  The fields of
# connection.UpstreamConnection live on this base, so both modules' methods read them
# from the struct.
from proxy.dataplane.sink cimport ResponseSink
from proxy.dataplane.upstream cimport Upstream

cdef class ResponseReader:
    cdef public Upstream upstream
    cdef public ResponseSink exchange
    cdef public object transport, parser, phase
    cdef public list head
    cdef public bytes reason
    cdef public tuple hop
    cdef public object body_file
    cdef public bint is_head, length, interim, head_sent, body_framed, paused, write_paused
    cdef public int status
    cdef public Py_ssize_t head_read
    cdef public double idle_since, deadline

    cpdef _new_head(self)
    cpdef _complete(self, bint keep_alive)
    # What _llhttp.pyx calls, through the C method table.  It gathers the head
    # itself, so on_status, on_header, on_headers_complete and on_message_complete
    # are httptools' callbacks only (the pure build's, and any build's fallback).
    cpdef head_parsed(self, int status)
    cpdef on_body(self, bytes body)
    cpdef message_done(self, bint keep_alive)
