# Augmenting declarations for Cython (dispatch.py stays plain Python).  Called once
# per request (exchange.pxd cimports it: a C call, not a Python one).
cimport cython
from proxy.dataplane.connection cimport UpstreamConnection
from proxy.dataplane.sink cimport ResponseSink
from proxy.dataplane.upstream cimport Upstream

@cython.locals(conn=UpstreamConnection, now=double, idle=list)
cpdef dispatch(Upstream up, ResponseSink exchange, bytes payload, bint is_head,
               body_file=*, bint fresh=*)
