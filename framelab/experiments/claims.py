"""The claims the experiments check, one short line each, by ID.

Paraphrased from the FAQ of the TCP/IP notes the lab was built from; the
IDs are stable, so results, tests and the README refer to them.
"""

from __future__ import annotations

CLAIMS: dict[str, str] = {
    "C01": "Ethernet MTU is 1500; the largest captured frame is 1514 bytes",
    "C02": "frames under 46 bytes of payload are padded; a capture shows them unpadded",
    "C03": "the IP header is at most 60 bytes; an IP datagram at most 64 KiB",
    "C04": "a datagram over the MTU is fragmented, every fragment with the same ID",
    "C05": "ping and traceroute use ICMP echo, time-exceeded and unreachable",
    "C06": "UDP keeps message boundaries: no sticky packets",
    "C07": "a UDP payload over 1472 bytes fragments on Ethernet",
    "C08": "the TCP header is at most 60 bytes",
    "C09": "a connection opens with SYN, SYN+ACK, ACK",
    "C10": "a connection closes with FIN/ACK twice; every TCP state can be observed",
    "C11": "TIME_WAIT lasts 2*MSL, about 30 s in practice",
    "C12": "MTU = IP header + TCP header + MSS",
    "C13": "the default MSS is 536 bytes",
    "C14": "the MSS option appears only in SYN segments",
    "C15": "the accept queue holds `backlog` connections; beyond it new ones are dropped",
    "C16": "tcp_max_syn_backlog bounds the SYN queue; syncookies defend against floods",
    "C17": "TCP is a byte stream: sends merge and split (sticky packets)",
    "C18": "with Nagle on, a small send may be held back",
    "C19": "data larger than the MSS is split into several segments",
    "C20": "a 4-byte length header splits the stream back into messages",
    "C21": "close() releases both directions; shutdown() acts on one or both",
    "C22": "close() of one of several holders sends nothing; shutdown() affects all",
    "C23": "writing after shutdown(SHUT_WR) fails with broken pipe",
    "C24": "reading after close() fails",
    "C25": "writing to a vanished peer: first write succeeds, RST, then broken pipe",
    "C26": "when a process dies the kernel closes its sockets (the peer sees FIN)",
    "C27": "connecting to a port with no listener: RST, connection refused",
    "C28": "close() with unread received data sends RST instead of FIN",
    "C29": "SO_LINGER with a timeout sends what it can, then resets; timeout 0 resets",
    "C30": "when the peer aborts, the selector reports readable and the read fails",
    "C31": "a socket write needs no flush; only a buffered wrapper does",
    "C32": "the side that closes first holds TIME_WAIT",
    "C33": "tcp_tw_recycle recycles TIME_WAIT quickly (and breaks NAT)",
    "C34": "tcp_tw_reuse lets a new connection reuse a TIME_WAIT 4-tuple",
    "C35": "tcp_max_tw_buckets caps TIME_WAIT sockets; the surplus are destroyed",
    "C36": "TCP_NODELAY turns Nagle off: small writes leave at once",
    "C37": "the number of connections is bounded by the open-file limits",
    "C38": "no listener: RST for TCP, ICMP port unreachable for UDP",
    "C39": "a segment for no known connection is answered with RST",
    "C40": "when retransmissions run out, the connection is aborted",
}

#: the notes' open questions, answered by measurement (experiments/questions.py)
QUESTIONS: dict[str, str] = {
    "Q1": "question: does a reader blocked in recv() wake when the peer resets, and with what?",
    "Q2": "question: when does a client see 'connection reset by peer' (an overloaded server)?",
    "Q3": "question: why is the delay always the same number of seconds (SYNs dropped)?",
    "Q4": "question: the server's extra ACK right after the handshake in the notes' trace",
}

#: beyond the notes: what the server's own operation relies on (experiments/reuseport.py)
EXTRAS: dict[str, str] = {
    "X1": "closing one SO_REUSEPORT listener resets its queue; tcp_migrate_req=1 moves it",
}

#: the text of any result's ID, claim, question or extra
TEXTS: dict[str, str] = {**CLAIMS, **QUESTIONS, **EXTRAS}
