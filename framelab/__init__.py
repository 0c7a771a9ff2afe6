"""framelab: the command-line front end (see framelab.cli)."""
