cdef class Upstream:
    cdef public object address, label, pool, loop, on_change, _reported, log_event
    cdef public list idle
    cdef public double connect_timeout, idle_timeout, response_timeout, _last_report
    cdef public Py_ssize_t inflight, passive_failures, eject_after, closes, resent
    cdef public bint healthy, enabled

    cpdef release(self, conn)
