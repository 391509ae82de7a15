"""Routing: the data policies see, the policies, their registry and the cost model."""
