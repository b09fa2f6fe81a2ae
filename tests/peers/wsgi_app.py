"""A WSGI upstream for the end-to-end tests, served by gunicorn with its defaults.

    /drip?numbytes=N&duration=S   httpbin's drip: N bytes of '*' spread over S seconds,
                                  with Content-Length, one byte per write
    anything else                 reads the body, answers "gunicorn METHOD BYTES\\n"
"""

import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/drip":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        numbytes = int(query.get("numbytes", ["10"])[0])
        duration = float(query.get("duration", ["2"])[0])
        pause = duration / max(numbytes, 1)
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(numbytes))],
        )

        def drip():
            for _ in range(numbytes):
                yield b"*"
                time.sleep(pause)

        return drip()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
    out = f"gunicorn {environ['REQUEST_METHOD']} {len(body)}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
