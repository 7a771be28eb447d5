"""Herald's SMTP sink for the native dev/test stack.

Accepts every message on an SMTP port and serves what it received over HTTP with a subset of Mailpit's API, so
the same tests and scripts work against this sink and against the Mailpit container of the compose stack:

  GET    /api/v1/info                      {"Version", "Messages"}
  GET    /api/v1/messages?start=&limit=    {"total", "count", "start", "messages": [summary, ...]}, newest first
  GET    /api/v1/search?query=to:a@b.c     same shape; terms to:, from:, subject: and bare words, all must match
  GET    /api/v1/message/<ID>              summary plus "Text", "HTML"
  GET    /api/v1/message/<ID>/headers      {"Header-Name": ["value", ...]}
  GET    /api/v1/message/<ID>/raw          the message as received
  DELETE /api/v1/messages                  deletes {"IDs": [...]} or, with no body, everything

Messages are kept in memory: a restart of the sink empties it, which suits a test sink.
Run: python smtp_sink.py --smtp-port 1025 --http-port 8025 (loopback only).
"""

import argparse
import email
import email.policy
import json
import shlex
import signal
import threading
import time
import uuid
from datetime import datetime, timezone
from email.utils import getaddresses, parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from aiosmtpd.controller import Controller

LOCK = threading.Lock()
MESSAGES = []  # oldest first


def address(name_addr):
    name, addr = name_addr
    return {"Name": name, "Address": addr}


class Handler:
    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text_part = msg.get_body(preferencelist=("plain",))
        html_part = msg.get_body(preferencelist=("html",))
        record = {
            "ID": uuid.uuid4().hex,
            "MessageID": (msg.get("Message-ID") or "").strip("<>"),
            "From": address(parseaddr(msg.get("From", envelope.mail_from))),
            "To": [address(a) for a in getaddresses(msg.get_all("To", []))],
            "Cc": [address(a) for a in getaddresses(msg.get_all("Cc", []))],
            "Envelope": {"From": envelope.mail_from, "To": list(envelope.rcpt_tos)},
            "Subject": str(msg.get("Subject", "")),
            "Created": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "Size": len(raw),
            "Text": text_part.get_content() if text_part is not None else "",
            "HTML": html_part.get_content() if html_part is not None else "",
            "Headers": {},
            "Raw": raw.decode("utf-8", errors="replace"),
        }
        for key, value in msg.items():
            record["Headers"].setdefault(key, []).append(str(value))
        record["Snippet"] = record["Text"][:250]
        with LOCK:
            MESSAGES.append(record)
        return "250 Message accepted for delivery"


def summary(record):
    return {k: record[k] for k in ("ID", "MessageID", "From", "To", "Cc", "Subject", "Created", "Size", "Snippet")}


def matches(record, terms):
    recipients = [a["Address"].lower() for a in record["To"] + record["Cc"]] + [
        a.lower() for a in record["Envelope"]["To"]
    ]
    for term in terms:
        field, _, value = term.partition(":") if ":" in term else ("", "", term)
        value = value.lower()
        if field == "to":
            ok = any(value in r for r in recipients)
        elif field == "from":
            ok = value in record["From"]["Address"].lower()
        elif field == "subject":
            ok = value in record["Subject"].lower()
        else:
            ok = value in (record["Subject"] + " " + record["Text"]).lower()
        if not ok:
            return False
    return True


class Api(BaseHTTPRequestHandler):
    server_version = "herald-smtp-sink/1"

    def log_message(self, fmt, *args):  # keep the log for errors only
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def listing(self, records, query):
        records = list(reversed(records))
        start = int(query.get("start", ["0"])[0])
        limit = int(query.get("limit", ["50"])[0])
        page = records[start : start + limit]
        self.send_json(
            200,
            {"total": len(records), "count": len(page), "start": start, "messages": [summary(r) for r in page]},
        )

    def find(self, message_id):
        with LOCK:
            return next((r for r in MESSAGES if r["ID"] == message_id), None)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        with LOCK:
            snapshot = list(MESSAGES)
        if parts == ["api", "v1", "info"]:
            return self.send_json(200, {"Version": self.server_version, "Messages": len(snapshot)})
        if parts == ["api", "v1", "messages"]:
            return self.listing(snapshot, query)
        if parts == ["api", "v1", "search"]:
            terms = shlex.split(query.get("query", [""])[0])
            return self.listing([r for r in snapshot if matches(r, terms)], query)
        if len(parts) >= 4 and parts[:3] == ["api", "v1", "message"]:
            record = self.find(parts[3])
            if record is None:
                return self.send_json(404, {"error": "message not found"})
            if len(parts) == 4:
                body = summary(record)
                body.update({"Text": record["Text"], "HTML": record["HTML"]})
                return self.send_json(200, body)
            if parts[4:] == ["headers"]:
                return self.send_json(200, record["Headers"])
            if parts[4:] == ["raw"]:
                data = record["Raw"].encode()
                self.send_response(200)
                self.send_header("Content-Type", "message/rfc822")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return None
        return self.send_json(404, {"error": "not found"})

    def do_DELETE(self):
        if urlparse(self.path).path.rstrip("/") != "/api/v1/messages":
            return self.send_json(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        ids = json.loads(self.rfile.read(length) or b"{}").get("IDs") if length else None
        with LOCK:
            if ids:
                MESSAGES[:] = [r for r in MESSAGES if r["ID"] not in set(ids)]
            else:
                MESSAGES.clear()
        return self.send_json(200, {"ok": True})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    args = parser.parse_args()

    controller = Controller(Handler(), hostname=args.host, port=args.smtp_port, data_size_limit=25 * 1024 * 1024)
    controller.start()
    http = ThreadingHTTPServer((args.host, args.http_port), Api)
    http.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"smtp sink: smtp {args.host}:{args.smtp_port}, http {args.host}:{args.http_port}", flush=True)
    while not stop.is_set():
        time.sleep(0.2)
    http.shutdown()
    controller.stop()


if __name__ == "__main__":
    main()
