"""Serving: Triton model repositories, a local tritonserver, and the Python-backend models copied into repositories."""
