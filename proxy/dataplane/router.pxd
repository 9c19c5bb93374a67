# Augmenting declarations for Cython (router.py stays plain Python).  choose_pool
# runs once a request: plane.pxd cimports it, a C call, not a Python one.
cpdef choose_pool(table, healthy, sticky, override, double draw, double now)
