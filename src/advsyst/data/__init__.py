"""advsyst.data."""
