from proxy.dataplane.writes cimport Outbox
from proxy.dataplane.forwarding cimport Forwarding
from proxy.dataplane.request cimport Request
from proxy.dataplane.router cimport choose_pool
from proxy.dataplane.accesslog cimport AccessLog

cdef class DataPlane:
    cdef public object loop, config, timeouts, table, healthy, signer, log
    cdef public AccessLog access
    cdef public object cookie_name, tester_cookie, our_cookies, _cookie_lines, _random
    cdef public object on_passive_failure, pause
    cdef public dict pools, read_timeouts, idle
    cdef public set clients, tunnels
    cdef public bint draining
    cdef public Py_ssize_t max_body, max_header, body_memory, max_connections, evicted
    cdef public Outbox outbox
    cdef public Forwarding forwarding

    cpdef choose(self, Request req, str peer, bint via_proxy=*)
    cpdef set_cookie_line(self, str pool, bint secure=*)
