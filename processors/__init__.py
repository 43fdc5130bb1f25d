"""coffea processors shipped with advsyst (installed as ``advsyst.processors``)."""
