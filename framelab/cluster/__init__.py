"""framelab behind a real load balancer: HAProxy, servers in namespaces, a load, a failure.

haproxy.py runs HAProxy and writes its configuration; load.py is the client
load; run.py builds the hosts and runs everything; report.py says what was
seen; cli.py is `framelab cluster`. Above the servers and the lab's netns
helpers; nothing below imports it.
"""
