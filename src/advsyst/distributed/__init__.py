"""advsyst.distributed."""
