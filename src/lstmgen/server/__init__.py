"""``lstmgen serve``: an OpenAI-compatible HTTP API with request batching, and a playground.

- ``rows.py``: per-row sampling (each request its own settings and seeded generator)
- ``batcher.py``: the decode loop that steps all active sequences as one batch
- ``scoring.py``: per-token log-probabilities of a given text
- ``protocol.py``: OpenAI request fields checked into typed objects, errors in OpenAI's shape
- ``app.py``: the FastAPI routes (needs the ``serve`` extra: ``pip install 'lstmgen[serve]'``)
- ``static/playground.html``: the browser page served at ``/``

Importing this package imports nothing from FastAPI; ``app`` does.
"""
