"""The Starlette WebSocket/HTTP gateway: broadcast fan-out, resume, status, HTTP emit."""
