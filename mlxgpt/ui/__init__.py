"""Renderers of training events: they observe the loop, never drive it."""
