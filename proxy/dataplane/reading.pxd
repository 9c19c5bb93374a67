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
    # What _llhttp.pyx calls, through the C method table: llhttp's callbacks, with
    # head_parsed in on_headers_complete's place (given what the getters would say)
    cpdef on_message_begin(self)
    cpdef on_url(self, bytes url)
    cpdef on_header(self, bytes name, bytes value)
    cpdef head_parsed(self, bytes method, str version, bint keep_alive)
    cpdef on_body(self, bytes body)
    cpdef on_message_complete(self)
    cpdef _start(self, Request req)
