"""The bottom layer: the broker's vocabulary, which every other package speaks.

Errors and the one refusal exception, query types, worker kinds, roles and states, the specs
of queries, workers, pools and realms, the steps of a multi-step query, and the words the
voice mode listens for. Nothing here imports anything else of the project (a test walks the
imports to hold that), so any layer can use it without pulling in another.
"""
