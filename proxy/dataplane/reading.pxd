# Augmenting declarations for Cython (reading.py stays plain Python).  The fields of
# client.ClientConnection live on this base.  (`plane` stays untyped: cimporting
# plane.pxd would import plane.py first, which imports this module.)
from proxy.dataplane.request cimport Request

cdef class RequestReader:
    cdef public object plane, transport, parser, peer, peer_bytes, queue, current
    cdef public object early, read
    cdef public Request reading
    cdef public bint trusted, paused_writing, read_paused, starting
    cdef public double deadline, send_deadline, idle_since
    cdef public Py_ssize_t head_size
