"""An SMTP server for the alerting tests (aiosmtpd): every message received is appended to OUT as one JSON line
{"from": ..., "to": [...], "data": "<the message as sent>", "tls": bool, "user": "..."}.

Usage: smtp_sink.py PORT OUT [CERT KEY USER PASSWORD]
  With CERT and KEY, STARTTLS is offered and required before AUTH; with USER and PASSWORD, AUTH LOGIN/PLAIN
  is required and checked. Prints "ready" once listening.
"""

import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out = int(sys.argv[1]), sys.argv[2]
cert, key, user, password = (sys.argv[3:7] + [None] * 4)[:4]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
                "tls": session.ssl is not None,
                "user": session.auth_data.login.decode() if session.authenticated and session.auth_data else None,
            }) + "\n")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password:
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)


kwargs = {}
if cert:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    kwargs.update(tls_context=context, require_starttls=True)
if user:
    kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(cert))
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
