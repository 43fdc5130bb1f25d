"""advsyst.features."""
