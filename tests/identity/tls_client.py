"""An independent TLS client for vole's tests: CPython's ssl (OpenSSL).

Usage: tls_client.py PORT SERVER_CA [CERT KEY]

Writes the VOP offer as vole's vop.rs expects it, reads the server's
answer, wraps the socket in TLS (with the client certificate, if given),
and reads what the server sends first over TLS (its VEC hello). Prints one
line: `served <first line>`, `closed` (TLS up, then the server closed
without a word) or `refused <error>` (the TLS handshake or the first read
failed), and exits 0; anything else is a failure of the script.
"""

import socket
import ssl
import sys


def main():
    port = int(sys.argv[1])
    server_ca = sys.argv[2]
    cert = sys.argv[3] if len(sys.argv) > 4 else None
    key = sys.argv[4] if len(sys.argv) > 4 else None

    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n")
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = raw.recv(1)
        if not chunk:
            print("refused vop: closed after %r" % answer)
            return
        answer += chunk
    if answer != b"VOP_DRAFT-0.8 USE_TRANSPORT:TLS\n":
        print("unexpected VOP answer %r" % answer)
        sys.exit(1)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=server_ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        first = b""
        while not first.endswith(b"\n"):
            chunk = tls.recv(1)
            if not chunk:
                break
            first += chunk
    except (ssl.SSLError, OSError) as e:
        print("refused %s" % e)
        return
    if not first:
        print("closed")
    else:
        print("served %s" % first.decode("ascii", "replace").strip())


if __name__ == "__main__":
    main()
