cdef class Histogram:
    cdef public object counts
    cdef public Py_ssize_t total
    cdef public double sum

    cpdef observe(self, double seconds)
