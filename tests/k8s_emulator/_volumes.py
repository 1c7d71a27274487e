"""Kubelet's AtomicWriter layout for Secret volumes.

    <dir>/..2026_11_29_10_00_00.123456789/ca.crt   the payload of one sync
    <dir>/..data -> ..2026_11_29_10_00_00.123456789 swapped atomically (temp symlink + rename)
    <dir>/ca.crt -> ..data/ca.crt                   one user-visible symlink per key

A reader that opens ``<dir>/ca.crt`` always sees one complete payload, old or new.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import shutil

DATA_DIR = "..data"
_TS_DIR_RE = re.compile(r"^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+$")


def current_payload(target_dir: str) -> dict | None:
    """The payload currently published through ``..data`` (None when there is no layout yet)."""
    data_dir = os.path.join(target_dir, DATA_DIR)
    if not os.path.isdir(data_dir):
        return None
    payload = {}
    for name in os.listdir(data_dir):
        with open(os.path.join(data_dir, name), "rb") as handle:
            payload[name] = handle.read()
    return payload


def write_payload(target_dir: str, payload: dict, mode: int = 0o644) -> bool:
    """Publish ``payload`` ({key: bytes}) into ``target_dir``; return False when already current."""
    os.makedirs(target_dir, exist_ok=True)
    links_ok = all(os.path.islink(os.path.join(target_dir, key)) and os.readlink(os.path.join(target_dir, key)) == os.path.join(DATA_DIR, key)
                   for key in payload)
    if links_ok and current_payload(target_dir) == payload:
        return False
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.")
    while True:
        ts_name = stamp + "%09d" % random.randrange(10 ** 9)
        try:
            os.mkdir(os.path.join(target_dir, ts_name), 0o755)
            break
        except FileExistsError:
            continue
    ts_dir = os.path.join(target_dir, ts_name)
    for key, content in payload.items():
        path = os.path.join(ts_dir, key)
        with open(path, "wb") as handle:
            handle.write(content)
        os.chmod(path, mode)
    data_link = os.path.join(target_dir, DATA_DIR)
    tmp_link = os.path.join(target_dir, "..data_tmp")
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(ts_name, tmp_link)
    os.replace(tmp_link, data_link)
    # User-visible per-key symlinks; a plain file left by a non-Kubernetes setup is replaced too.
    for key in payload:
        link = os.path.join(target_dir, key)
        want = os.path.join(DATA_DIR, key)
        if os.path.islink(link) and os.readlink(link) == want:
            continue
        tmp = os.path.join(target_dir, ".%s.tmp-link" % key)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(want, tmp)
        if os.path.isdir(link) and not os.path.islink(link):
            shutil.rmtree(link)
        os.replace(tmp, link)
    # Keys that disappeared from the Secret: drop their symlinks (only ours).
    for name in os.listdir(target_dir):
        link = os.path.join(target_dir, name)
        if name.startswith(".") or name in payload or not os.path.islink(link):
            continue
        if os.readlink(link).startswith(DATA_DIR + os.sep):
            os.unlink(link)
    # Old payload directories go last, after nothing points at them any more.
    for name in os.listdir(target_dir):
        if name != ts_name and _TS_DIR_RE.match(name) and os.path.isdir(os.path.join(target_dir, name)):
            shutil.rmtree(os.path.join(target_dir, name), ignore_errors=True)
    return True
