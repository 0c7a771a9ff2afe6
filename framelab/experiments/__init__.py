"""The experiments, each checking claims of the source notes, and the engine running them.

One module per experiment (sticky, nagle, linger, shutdown_close, broken_pipe,
reset, process_kill, flush, time_wait, backlog, states, link_mtu, mss, limits,
retransmission, icmp, reuseport, questions): it observes into dataclasses and
judges each claim part by part with pure `judge_cNN` functions (result.py
derives the verdict from the parts). The scripted raw-socket peer is the lab
kit's (framelab/lab/rawpeer.py); nagle_scripted.py scripts it. registry.py
lists the experiments, engine.py runs them (cli.py is argparse only), and
report, markdown, html_report, ladder, statediagram, pcap and evidence turn
one run into what people read.
"""
