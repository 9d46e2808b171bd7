"""Test support, written once (as ``structlog.testing`` is for structlog's users).

Modules:

- ``ports``: ``free_port`` for servers a test starts on loopback.
- ``waits``: ``eventually`` (poll a condition, never a fixed sleep), ``wait_healthy`` (a
  gateway's ``/health``), ``wait_answer`` (the first HTTP response of any status).
- ``processes``: ``bookgen-events`` as real processes: ``CLI``, one environment builder
  (``process_env``), ``cli`` (run a command to its end), ``one_line`` (a refusal's
  single line) and ``spawn`` (in the background).
- ``events``: event builders (``progress``, ``live_progress``).
- ``channels``: ``RecordingChannel``, a double of the channel seam.
- ``outcomes``: ``outcomes``, ``dead_letters``, ``final_outcomes`` read from Redis.
- ``webhooks``: one configurable webhook ``Receiver`` (scripted replies, delay, flapping),
  the ``receiver`` and ``webhook_settings`` fixtures, ``running`` (the real webhook channel
  in the real consumer loop).
- ``smtp``: a real aiosmtpd ``SmtpServer`` with its recording handler, and its fixtures.
- ``gateway``: a real gateway in the test's loop (``gateway_settings``, ``start_gateway``,
  ``gateway`` fixtures) and its client helpers (``token``, ``recv_json``, ``recv_until``).
- ``sink``: ``Sink``, a stand-in for the gateway's framed socket transport (the seam a
  ``Subscriber`` writes through).
- ``database``: the notifications table's ``rows``/``snapshot``; ``PgDatabase``, a
  throwaway PostgreSQL database.

Fixtures defined here reach the tests through ``conftest.py`` files (``tests/conftest.py``
for those every folder uses, a folder's own for the rest); test modules import only the
plain helpers.
"""
