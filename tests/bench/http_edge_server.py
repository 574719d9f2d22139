"""Canned HTTP/1.1 responses for http_load_test.sh, chosen by the request's
path and sent one byte per write, so that every boundary falls inside a read:
  /chunked  an SSE stream, chunked with chunk extensions and a trailer
  /length   100 Continue, then a Content-Length body
  /eof      HTTP/1.0 with the SSE body running to the end of the connection
  /close    Content-Length and Connection: close
  /badchunk a chunk size that is not hex
  /short    a body shorter than its Content-Length, then close
  /503      an empty 503
Prints its port, then serves until killed."""
import socket
import threading

SSE = b'data: {"x":1}\n\ndata: [DONE]\n\n'


def chunked(parts, ext=b"", trailer=b""):
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts)
    return out + b"0\r\n" + trailer + b"\r\n"


RESPONSES = {
    "/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kiln-Backend: edge\r\n\r\n"
                 + chunked([SSE[:3], SSE[3:9], SSE[9:]], b";ext=1", b"X-Trailer: 1\r\n"), False),
    "/length": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", False),
    "/eof": (b"HTTP/1.0 200 OK\r\n\r\n" + SSE, True),
    "/close": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", True),
    "/badchunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True),
    "/short": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True),
    "/503": (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", False),
}


def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1].decode()
            length = next((int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length:")), 0)
            while len(rest) < length:
                rest += conn.recv(4096)
            buf = rest[length:]
            response, close = RESPONSES[path]
            for i in range(len(response)):
                conn.sendall(response[i:i + 1])
            if close:
                return
    except (OSError, KeyError):
        pass
    finally:
        conn.close()


def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
