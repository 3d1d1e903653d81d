"""An SMTP server that requires STARTTLS and then AUTH (PLAIN or LOGIN) with one account, for the
tests; messages are stored by smtp_sink.Sink.

    python3 smtp_auth_sink.py HOST PORT CERT KEY USER PASSWORD DIR

Every refused login is counted in DIR/auth-failures.log (one line per attempt, the mechanism).
"""

import asyncio
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from smtp_sink import Sink


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    host, port, cert, key, user, password, directory = sys.argv[1:]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        if not ok:
            with open(os.path.join(directory, "auth-failures.log"), "a") as f:
                f.write(mechanism + "\n")
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        return AuthResult(success=ok, handled=False)

    handler = Sink(directory)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(
                handler,
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                authenticator=authenticator,
            ),
            host,
            int(port),
        )
    )
    loop.run_forever()


if __name__ == "__main__":
    main()
