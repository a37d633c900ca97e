"""A DNS server the discovery tests control (dnslib): answers A, AAAA and SRV queries from a
JSON file read at every query, so a test changes the records by rewriting the file (and makes
the server go down by stopping it).

    {"ttl": 1,
     "records": {"mcp.test.": {"A": ["127.0.0.2"], "AAAA": []},
                 "_mcp._tcp.mcp.test.": {"SRV": [[0, 5, 8080, "a.mcp.test."]]}}}

usage: peer_dns.py PORT RECORDS_FILE (UDP and TCP on 127.0.0.1:PORT)
"""
import json
import sys
import time

from dnslib import AAAA, QTYPE, RR, SRV, A
from dnslib.server import BaseResolver, DNSServer


class FileResolver(BaseResolver):
    def __init__(self, path):
        self.path = path

    def resolve(self, request, handler):
        with open(self.path) as f:
            config = json.load(f)
        reply = request.reply()
        name = str(request.q.qname).lower()
        kind = QTYPE[request.q.qtype]
        ttl = config.get("ttl", 1)
        for value in config.get("records", {}).get(name, {}).get(kind, []):
            if kind == "A":
                reply.add_answer(RR(name, QTYPE.A, rdata=A(value), ttl=ttl))
            elif kind == "AAAA":
                reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(value), ttl=ttl))
            elif kind == "SRV":
                priority, weight, port, target = value
                reply.add_answer(RR(name, QTYPE.SRV, rdata=SRV(priority, weight, port, target), ttl=ttl))
        return reply


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    resolver = FileResolver(path)
    servers = [DNSServer(resolver, address="127.0.0.1", port=port, tcp=tcp) for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    print(f"dns listening on 127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
