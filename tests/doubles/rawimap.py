"""A raw IMAP client for the doubles' tests: the server's exact bytes, no parsing."""

from __future__ import annotations

import re
import socket


class Raw:
    """A socket client that shows the server's exact bytes (for literals and pipelining)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged completion of ``tag`` (literals inline)."""
        lines = []
        while True:
            line = self.line()
            while m := re.search(rb"\{(\d+)\}\Z", line):
                line += b"\r\n" + self.exact(int(m.group(1))) + self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def cmd(self, line: bytes) -> list[bytes]:
        """Send one command line; its answer as :meth:`until` gives it."""
        self.send(line + b"\r\n")
        return self.until(line.split(b" ", 1)[0])

    def login(self, user: str, password: str) -> None:
        self.send(b"L LOGIN " + user.encode() + b" " + password.encode() + b"\r\n")
        assert self.until(b"L")[-1].startswith(b"L OK")

    def close(self) -> None:
        self.sock.close()
