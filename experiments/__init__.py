"""Running experiments from scenario files: the run loop, the runtimes that gather rewards for
a scenario (sim, emulate, live), sweeps, reports and the ``fedgrpo`` command line.

The top layer: it may import every other package; nothing imports it.
"""
