# Augmenting declarations for Cython (reading.py stays plain Python).  The fields of
# client.ClientConnection live on this base and on sink.Client.
from proxy.dataplane.plane cimport DataPlane
from proxy.dataplane.request cimport Request
from proxy.dataplane.sink cimport Client

cdef class RequestReader(Client):
    cdef public DataPlane plane
    cdef public object parser, queue, early, read
    cdef public Request reading
    cdef public bint read_paused, starting
    cdef public double deadline, send_deadline, idle_since
    cdef public Py_ssize_t head_size

    cpdef _enter(self, phase, double now=*)
    # llhttp's callbacks: _llhttp.pyx calls them through the C method table
    cpdef on_message_begin(self)
    cpdef on_url(self, bytes url)
    cpdef on_header(self, bytes name, bytes value)
    cpdef on_headers_complete(self)
    cpdef on_body(self, bytes body)
    cpdef on_message_complete(self)
    cpdef _start(self, Request req)
