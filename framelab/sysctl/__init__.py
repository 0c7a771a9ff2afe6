"""`framelab sysctl`: the kernel settings the lab touches, explained.

params.py is the table (data only); explain.py joins it with the live value
from /proc/sys and the last saved run; cli.py prints it.
"""
