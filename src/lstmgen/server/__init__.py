"""``lstmgen serve``: an OpenAI-compatible HTTP API with request batching, and a playground.

- ``rows.py``: per-row sampling (each request its own settings and seeded generator)
- ``batcher.py``: the decode loop that steps all active sequences as one batch
- ``scoring.py``: per-token log-probabilities of a given text
- ``protocol.py``: OpenAI request fields checked into typed objects, errors in OpenAI's shape
- ``openai.py``: OpenAI's response objects and stream events, built from plain data
- ``mailbox.py``: a request's chunks from the decode thread to the event loop
- ``handlers.py``: what each endpoint does (checks, batcher, responses)
- ``app.py``: ``create_app``, the wiring: routes, middleware, error handlers, lifespan (needs the
  ``serve`` extra: ``pip install 'lstmgen[serve]'``)
- ``static/playground.html``: the browser page served at ``/``

Importing this package imports nothing from FastAPI; ``app``, ``handlers`` and ``mailbox`` do.
"""
