"""The parts of ``ca-bundle-sync`` (scripts/catools/bundle_sync.py is its command line), one job each.

``options``   the command line, the --config file, validation into a Config
``log``       single-line key=value log records, secrets masked
``files``     everything written on the host: safe creation, atomic replacement, the instance lock
``state``     the state file and the Prometheus textfile metrics
``keys``      the verification keys (pinned file, or OpenBao transit)
``policy``    what an announcement must be to be applied (verification and acceptance rules)
``apply``     writing the bundle and reloading the service
``consumer``  NATS: the connection, the durable pull consumer, fetching
``syncer``    the loop: fetch, decide, apply, record, acknowledge
"""

from catools import ensure_collection_importable

ensure_collection_importable()
