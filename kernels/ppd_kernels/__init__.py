"""Compute for the embedded engine: Llama-family forward, attention, weight loading."""
