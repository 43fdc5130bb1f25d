"""advsyst.workflows."""
