"""Bytewax operators: thin logic classes translating events into calls to cj/ and judges/."""

import os

# One Bytewax worker is one thread, and the matrices of a batch refit are small: BLAS
# threads only spin and contend (a 31x31 Cholesky took 25 ms with OpenBLAS threads on a
# busy 2-core machine, 18 us with one). Scale out with processes instead. Must run before
# numpy is imported; an explicit setting in the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
