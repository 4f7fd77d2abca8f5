"""The e2e suite's fake DNS server (integration/e2e/e2e.py) on 127.0.0.1:53, for the
upstream-name test inside its network namespace: A 127.0.0.1 for the names in argv[3:], an
empty NOERROR for their other types, NXDOMAIN for anything else. Every question is appended
to argv[2] as "name qtype"; argv[1] is created once it listens."""
import os
import signal
import sys

signal.alarm(50)  # never outlive the test, even if it is killed
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../integration/e2e"))
from e2e import FakeDns  # noqa: E402

ready, log, known = sys.argv[1], sys.argv[2], sys.argv[3:]


class Logged(FakeDns):
    def answer(self, packet):
        reply = super().answer(packet)
        if self.queries:
            name, qtype = self.queries.pop()
            with open(log, "a") as f:
                f.write(f"{name} {qtype}\n")
        return reply


dns = Logged(known, port=53)
open(ready, "w").close()
dns.run()
