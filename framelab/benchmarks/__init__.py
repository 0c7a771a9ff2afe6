"""`framelab bench`: the framed echo against the raw echo and an independent peer.

grid.py says what a run covers (cases, targets, goals); targets.py starts the
servers under test; loadgen.py is the load generator, in a process of its
own; runner.py drives the grid; report.py and plot.py turn results into
tables, JSON and charts.
"""
