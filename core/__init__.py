"""deid's core: what every layer needs and nothing else (errors, atomic writes, locks, the plugin registry,
settings helpers, input hashing, version). It imports only the standard library (tests/test_layers.py).
"""
