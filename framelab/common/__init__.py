"""The lab's ground floor: helpers every command shares (argument types, charts,
the last run's saved results).

Nothing here imports servers, clients, experiments, benchmarks or the CLI, so
any of them may import it without an arrow running back up.
"""
