"""``ca-trust-canary``: continuous, independent evidence of what every NATS server trusts and serves.

Every interval the canary

1. reads OpenBao (the collection's ``_status.gather``): the ``epoch-<n>`` issuers and their state, the default
   issuer, the per-cluster proof records of the rotation and the bundles they name;
2. keeps a client leaf of every valid epoch (role of its own, short TTL, ``no_store``; ``leaves.py``);
3. makes a *leaf-only* TLS handshake with each leaf against every server's client port (``probe.py``): with the
   leaf alone a server accepts it only when its CA file holds that epoch's intermediate; the handshake also
   shows the certificate the server serves;
4. reads each server's CA file where it is reachable (a VM's file, or the mounted ``nats-ca-tls`` Secret);
5. checks the invariants (``checks.py``, pure) and publishes metrics, a verdict JSON file and an HTML timeline.

An unreachable OpenBao or server is an *error* (its own metric and verdict field), never a trust violation.
"""
