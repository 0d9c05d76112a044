"""The worker node (`rentahal worker`): one machine's model behind the seed's worker protocol.

`app` serves `GET /health` and `POST /predict`; `engines` hold the models (one module per
engine); `joining` registers with a broker and heartbeats; `outbound` takes jobs over a
WebSocket the worker opens itself, for machines behind NAT.
"""
