"""Serving for real: Triton's own server on attnkit's repository (with stand-in backends), a TF Serving
REST stand-in, and load tests of a running KServe v2 endpoint. Heavy imports stay inside functions."""
