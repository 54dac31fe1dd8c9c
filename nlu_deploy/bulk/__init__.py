"""Bulk prediction: a file of any size in, a file of answers out, streamed in chunks of rows,
resumable, locally or on a Ray cluster."""
