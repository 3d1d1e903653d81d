"""A real SMTP server for the tests (run by aiosmtpd).

    python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c smtp_sink.Sink DIR [REJECT,REJECT,...]

Stores every accepted message as DIR/<uuid>.json ({"to": [...], "from", "subject", "messageId",
"body"} with the body decoded) and answers RCPT TO for the listed recipients with a permanent
"550 5.1.1 Mailbox unavailable", counting each refusal in DIR/rejected.log.
"""

import email
import email.policy
import json
import os
import uuid


class Sink:
    def __init__(self, directory, reject=""):
        self.directory = directory
        self.reject = {r.strip().lower() for r in reject.split(",") if r.strip()}

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) not in (1, 2):
            parser.error("usage: smtp_sink.Sink DIR [REJECT,...]")
        return cls(*args)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.reject:
            with open(os.path.join(self.directory, "rejected.log"), "a") as f:
                f.write(address + "\n")
            return "550 5.1.1 Mailbox unavailable: " + address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        record = {
            "to": list(envelope.rcpt_tos),
            "from": envelope.mail_from,
            "subject": str(msg.get("subject", "")),
            "messageId": str(msg.get("message-id", "")),
            "body": msg.get_content(),
        }
        name = uuid.uuid4().hex
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        # Rename so a reader never sees half a file.
        os.rename(tmp, os.path.join(self.directory, name + ".json"))
        return "250 Message accepted for delivery"
