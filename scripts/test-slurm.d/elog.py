"""Stands in for the eLog's counters endpoint: records each POST as one JSON line.

Usage: elog.py PORT_FILE LOG_FILE. Listens on 127.0.0.1 (port chosen by the system, written to
PORT_FILE once listening) and answers every POST with {"success": true}.
"""

import http.server
import json
import os
import sys

port_file, log_file = sys.argv[1], sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"unparsable": body.decode("utf-8", "replace")}
        with open(log_file, "a") as f:
            f.write(json.dumps({"path": self.path,
                                "content_type": self.headers.get("Content-Type"),
                                "body": parsed}) + "\n")
        reply = b'{"success": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))

os.replace(port_file + ".tmp", port_file)
server.serve_forever()
