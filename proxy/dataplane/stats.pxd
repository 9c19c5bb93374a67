cimport cython


cdef class Histogram:
    cdef public list counts
    cdef public Py_ssize_t total
    cdef public double sum

    @cython.locals(i=Py_ssize_t, bound=double)
    cpdef observe(self, double seconds)
